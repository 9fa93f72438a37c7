"""`agentshim demo`: the embedded default: the shipped demo traces replayed by 5 tenants at
2.5x overcommit under every policy, the comparison printed and plotted."""

from __future__ import annotations

from pathlib import Path

import click

DEMO_TRACES = Path(__file__).resolve().parent.parent / "replay" / "demo_traces"
DEFAULT_PLOT = Path("build/demo/replay.png")
#: The demo's tasks are ~5x compressed (40 s each), so agentshim's freeze_timeout is too.
DEMO_FREEZE_TIMEOUT_S = 10.0


@click.command("demo")
@click.option("--tenants", type=click.IntRange(1, 6), default=5, show_default=True,
              help="How many of the 6 demo traces to run at once.")
@click.option("--overcommit", type=click.FloatRange(min=0.1), default=2.5, show_default=True,
              help="Sum of the tenants' peaks / host memory (their averages need ~0.75 of it).")
@click.option("--speed", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Replay X times faster.")
@click.option("--mem-scale", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Multiply the traces' memory by this (for smaller machines).")
@click.option("--policy", "policy", default="all", show_default=True,
              help="none, static, static-fixed, reactive, agentshim or all (several with "
              "commas).")
@click.option("--no-podman", is_flag=True, help="Bare cgroups and processes, no containers.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_PLOT,
              show_default=True, help="Where to write the plot.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON document here.")
def demo(tenants: int, overcommit: float, speed: float, mem_scale: float, policy: str,
         no_podman: bool, plot: Path, as_json: bool, json_out: Path | None) -> None:
    """Replay the shipped demo traces (docs/replay.md) on one overcommitted host under
    none, static (an equal share of the host per container), static-fixed (2G per
    container), reactive and agentshim.

    About 3 minutes on a 2-core machine; needs root, and podman unless --no-podman. The
    traces come from `python -m agentshim.replay.gendemo`, calibrated to the published
    statistics of real agent tasks.
    """
    from agentshim.cli.replay import _policies, execute, progress
    from agentshim.replay.runner import ReplayConfig

    if not DEMO_TRACES.is_dir():
        raise click.ClickException(f"the demo traces are missing ({DEMO_TRACES}); regenerate "
                                   "them: python -m agentshim.replay.gendemo " + str(DEMO_TRACES))
    traces = sorted(p for p in DEMO_TRACES.iterdir() if p.is_dir())[:tenants]
    try:
        names = _policies(click.get_current_context(), click.Option(["--policy"]), policy)
    except click.BadParameter as e:
        raise click.UsageError(f"--policy: {e.message}") from None
    config = ReplayConfig(traces=traces, tenants=tenants, overcommit=overcommit, speed=speed,
                          mem_scale=mem_scale, policies=names, static_size="share",
                          podman=not no_podman, freeze_timeout_s=DEMO_FREEZE_TIMEOUT_S)
    progress(f"agentshim demo: {tenants} agent tenants replaying the demo traces at "
             f"{overcommit:g}x overcommit, policies one after another (~45 s each)")
    execute(config, as_json, plot, json_out)
    progress(f"the plot is in {plot.resolve()}")
