"""`agentshim report`: the characterization of one or many agent traces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from agentshim.report import DEFAULT_BURST_MB, build_report, format_text
from agentshim.trace import TraceError, find_traces, load_trace

#: Largest --burst-mb accepted (1 PB): keeps the option finite.
MAX_BURST_MB = 1e9


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of MB")
    return value


@click.command("report")
@click.argument("traces", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write PNG figures into this directory (created if needed).")
@click.option("--burst-mb", type=click.FloatRange(min=0, max=MAX_BURST_MB, min_open=True),
              default=DEFAULT_BURST_MB, show_default=True, callback=_finite,
              help="A burst is memory above the framework baseline by more than this (MB).")
def report(traces: tuple[Path, ...], as_json: bool, plots_dir: Path | None,
           burst_mb: float) -> None:
    """Characterize agent traces: baseline, peaks, bursts, tool calls, CPU.

    Each TRACE is a task directory (the published dataset's resources.json + tool_calls.json,
    or agentshim's own meta.json format) or a folder holding task directories (searched).
    Metrics are defined in docs/characterization.md; memory is in decimal MB.
    """
    try:
        loaded = [load_trace(path) for path in find_traces(traces)]
    except TraceError as exc:
        raise click.ClickException(str(exc)) from None
    result = build_report(loaded, burst_mb)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        click.echo(format_text(result), nl=False)
    if plots_dir is not None:
        from agentshim.plots import write_plots  # matplotlib only when plots are asked for

        try:
            written = write_plots(result, plots_dir)
        except OSError as exc:
            raise click.ClickException(
                f"{exc.filename or plots_dir}: cannot write plots: {exc.strerror or exc}"
            ) from None
        click.echo(f"wrote {len(written)} plot(s) to {plots_dir}", err=True)
