"""`agentshim trace`: record a running container's resource series and tool calls live."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from agentshim.trace.recorder import Recorder, RecorderError, Status
from agentshim.trace.target import TargetError, find_target
from agentshim.units import MB, parse_duration

MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 60.0


def _duration(what: str, low: float, high: float | None = None) -> Any:
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        if seconds < low or (high is not None and seconds > high):
            bound = f"between {low:g} s and {high:g} s" if high is not None else f">= {low:g} s"
            raise click.BadParameter(f"{what} must be {bound}, not {value!r}")
        return seconds
    return convert


def _status_line(name: str, st: Status) -> str:
    mem = f"{st.mem_bytes / MB:.1f} MB" if st.mem_bytes is not None else "-"
    tools = (f" (tools {st.tools_mem_bytes / MB:.1f} MB)"
             if st.tools_mem_bytes is not None else "")
    return (f"trace {name}: {st.elapsed_s:6.1f} s  {st.samples} samples  mem {mem}{tools}  "
            f"{st.calls} call(s)  {st.events} event(s)")


@click.command("trace")
@click.argument("container")
@click.option("-o", "--output", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Trace directory to write (created; must not hold a trace already).")
@click.option("--interval", default="100ms", show_default=True,
              callback=_duration("the interval", MIN_INTERVAL_S, MAX_INTERVAL_S),
              help="Sampling interval (e.g. 100ms, 0.5s).")
@click.option("--duration", default=None, callback=_duration("the duration", 0.001),
              help="Stop after this long (e.g. 30s, 10m); default: until Ctrl-C or the "
                   "container exits.")
def trace(container: str, out_dir: Path, interval: float, duration: float | None) -> None:
    """Record CONTAINER (a podman name or id) into a trace directory.

    Samples memory, CPU and memory PSI of the container and of its framework/ and tools/
    cgroups every interval, and follows agentshimd's call records and events. Stops on
    Ctrl-C/SIGTERM, after --duration, or when the container exits; `agentshim report DIR`
    reads the result. Format: docs/characterization.md.
    """
    if os.geteuid() != 0:
        raise click.ClickException("agentshim trace must run as root (it reads the cgroups of "
                                   "podman's root containers and agentshimd's state)")
    try:
        target = find_target(container)
        recorder_name = target.name or target.id[:12]
        live = sys.stderr.isatty()

        def show(st: Status) -> None:
            sys.stderr.write("\r\x1b[K" + _status_line(recorder_name, st))
            sys.stderr.flush()

        recorder = Recorder(target, out_dir, interval_s=interval, duration_s=duration,
                            on_status=show if live else None)
    except (TargetError, RecorderError) as exc:
        raise click.ClickException(str(exc)) from None
    for note in target.notes:
        click.echo(f"agentshim trace: note: {note}", err=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        recorder.request_stop()

    saved = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = recorder.run()
    except RecorderError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if live:
            sys.stderr.write("\r\x1b[K")
    reason = {"signal": "stopped", "duration": "duration reached",
              "container_exited": "container exited"}.get(result.stop_reason, result.stop_reason)
    per_sample = result.meta.get("recorder_us_per_sample")
    click.echo(
        f"agentshim trace: {reason}: {result.samples} samples in {result.duration_s:.1f} s "
        f"(every {interval * 1000:g} ms, {result.missed_ticks} missed), {result.calls} call(s), "
        f"{result.events} event(s); recorder CPU {result.recorder_cpu_pct:.2f}% of one CPU"
        + (f" ({per_sample:g} us/sample)" if per_sample is not None else "")
        + f" -> {out_dir}", err=True)
