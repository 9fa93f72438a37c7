"""`agentshim replay`: tenants replay agent traces under each policy; the comparison."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import click

from agentshim.units import parse_duration, parse_size


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        size = parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if size <= 0:
        raise click.BadParameter("must be greater than 0")
    return size


def _static(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value.strip().lower() in ("peak", "avg", "average", "share"):
        return value.strip().lower()
    _size(ctx, param, value)
    return value


def _policies(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    from agentshim.replay.policies import POLICIES

    names: list[str] = []
    for part in value.split(","):
        p = part.strip().lower()
        if p == "all":
            names.extend(POLICIES)
        elif p in POLICIES:
            names.append(p)
        else:
            raise click.BadParameter(f"unknown policy {part!r} (expected "
                                     f"{', '.join(POLICIES)} or all; several with commas)")
    return list(dict.fromkeys(names))


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise click.BadParameter("must be a number greater than 0")
    return value


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if seconds <= 0:
        raise click.BadParameter("must be greater than 0")
    return seconds


def progress(line: str) -> None:
    """Progress goes to stderr, so stdout holds only the table or the JSON."""
    click.echo(line, err=True)


def execute(config: object, as_json: bool, plot: Path | None,
            json_out: Path | None = None) -> dict:
    """Run a replay config; print the table (or JSON), write the plot. Returns the JSON."""
    from agentshim.replay.output import format_table, outcome_line, write_plot
    from agentshim.replay.runner import ReplayError, run_replay

    if os.geteuid() != 0:
        raise click.ClickException("replay needs root: it creates cgroups (and containers)")
    try:
        result = run_replay(config, progress)  # type: ignore[arg-type]
    except (ReplayError, ValueError, RuntimeError, OSError) as e:
        raise click.ClickException(str(e)) from None
    doc = result.to_json()
    doc["outcome"] = outcome_line(doc)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(format_table(doc), nl=False)
        click.echo("\n" + doc["outcome"])
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(doc, indent=2))
    if plot is not None:
        write_plot(doc, result.series, plot)
        progress(f"plot written to {plot}")
    return doc


def execute_sweep(config: object, ratios: str, as_json: bool, plot: Path | None) -> dict:
    """Run the config at each overcommit of ratios; print the sweep table (or JSON)."""
    from agentshim.replay.output import write_sweep_plot
    from agentshim.replay.runner import ReplayError
    from agentshim.replay.sweep import format_sweep, parse_ratios, run_sweep

    try:
        values = parse_ratios(ratios)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--sweep-overcommit") from None
    if os.geteuid() != 0:
        raise click.ClickException("replay needs root: it creates cgroups (and containers)")
    try:
        doc, _ = run_sweep(config, values, progress)  # type: ignore[arg-type]
    except (ReplayError, ValueError, RuntimeError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(doc, indent=2) if as_json else format_sweep(doc), nl=as_json)
    if plot is not None:
        write_sweep_plot(doc, plot)
        progress(f"plot written to {plot}")
    return doc


@click.command("replay")
@click.argument("traces", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--tenants", type=click.IntRange(min=1), help="Number of tenants (default: one "
              "per trace; traces are reused round robin when more).")
@click.option("--host-memory", callback=_size, metavar="SIZE",
              help="Memory limit of the host cgroup (e.g. 2G).")
@click.option("--overcommit", type=float, callback=_positive, metavar="R",
              help="Host memory = sum of the tenants' peaks / R (default 1.5).")
@click.option("--speed", type=float, default=1.0, show_default=True, callback=_positive,
              help="Replay X times faster than the traces.")
@click.option("--policy", "policies", default="all", show_default=True, callback=_policies,
              help="none, static, static-fixed, reactive, agentshim or all (several with "
              "commas).")
@click.option("--static-size", default="peak", show_default=True, callback=_static,
              help="memory.max per container under static: SIZE, peak or avg of its trace, "
              "or share (host / tenants).")
@click.option("--static-fixed-size", default="2G", show_default=True, callback=_size,
              metavar="SIZE", help="memory.max per container under static-fixed (the "
              "operators' round setting), times --mem-scale.")
@click.option("--mem-scale", type=float, default=1.0, show_default=True, callback=_positive,
              help="Multiply every trace's memory by this.")
@click.option("--freeze-timeout", default="30s", show_default=True, callback=_duration,
              help="agentshim policy: how long a call may stay frozen before it is killed.")
@click.option("--max-duration", type=float, callback=_positive, metavar="S",
              help="Replay only the first S seconds of each trace (trace time).")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="A tenant re-runs a killed tool call up to N times, then counts it failed.")
@click.option("--sweep-overcommit", metavar="R1,R2,...",
              help="Density sweep: run the policies at each of these overcommit ratios and "
              "print, per policy, the highest that works.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the plot (PNG) here.")
@click.option("--no-podman", is_flag=True, help="Bare cgroups and processes, no containers.")
@click.option("--no-swap", is_flag=True,
              help="Nothing in the replay swaps, whatever swap the machine has (every policy "
              "alike).")
@click.option("--keep", is_flag=True, help="Keep the tenants' files (logs, schedules).")
def replay(traces: tuple[Path, ...], tenants: int | None, host_memory: int | None,
           overcommit: float | None, speed: float, policies: list[str], static_size: str,
           static_fixed_size: int, mem_scale: float, freeze_timeout: float,
           max_duration: float | None, retries: int, sweep_overcommit: str | None,
           as_json: bool, plot: Path | None, no_podman: bool, no_swap: bool,
           keep: bool) -> None:
    """Replay agent traces as tenants on one memory-limited host under each policy.

    Each TRACE is a trace directory (the published dataset's or agentshim's own format) or a
    folder of them. Tenants are real containers managed by agentshim (or bare cgroups with
    --no-podman); the host is an outer cgroup with a memory limit. Progress goes to stderr,
    the comparison to stdout. See docs/replay.md.
    """
    from agentshim.replay.runner import ReplayConfig

    if host_memory is not None and overcommit is not None:
        raise click.UsageError("give --host-memory or --overcommit, not both")
    if sweep_overcommit is not None and (host_memory is not None or overcommit is not None):
        raise click.UsageError("--sweep-overcommit sets the host's size: no --host-memory "
                               "or --overcommit with it")
    config = ReplayConfig(traces=list(traces), tenants=tenants, host_memory=host_memory,
                          overcommit=overcommit, speed=speed, mem_scale=mem_scale,
                          policies=policies, static_size=static_size, podman=not no_podman,
                          freeze_timeout_s=freeze_timeout, max_duration_s=max_duration,
                          keep=keep, retries=retries, swap=not no_swap,
                          static_fixed_size=str(static_fixed_size))
    if sweep_overcommit is not None:
        execute_sweep(config, sweep_overcommit, as_json, plot)
    else:
        execute(config, as_json, plot)
