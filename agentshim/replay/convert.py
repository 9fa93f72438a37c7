"""Trace to schedule: what a tenant must do to replay one agent trace (docs/replay.md).

- The agent holds the trace's framework baseline (the report's baseline: 10th percentile of
  the samples outside tool calls), or more where the trace shows more memory outside calls.
- Every sample after the container's start-up is given to at most one tool call: the call
  whose window, widened by half a sampling interval before and one after (the trace's
  timestamps come from two clocks), holds it; the nearest start wins. A call's profile is its
  samples minus the agent's memory when it started, as a step function; memory is freed at
  the call's end. Offsets past the end are pulled inside it.
- Bash calls become tool calls through ``bash -c``; the agent's built-in tools (Read, Edit,
  ...) make their memory inside the agent process.
- Times are divided by ``speed``; memory is multiplied by ``mem_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from agentshim.replay.schedule import BASH, INTERNAL, Call, Schedule
from agentshim.report import baseline_bytes, call_category, sample_interval, startup_count
from agentshim.trace.model import Sample, ToolCall, Trace

#: Changes of the agent's own memory smaller than this are not replayed (bytes, unscaled).
FRAMEWORK_STEP = 4 << 20
#: Memory above the agent's below this is noise, not a call's (bytes, unscaled).
CALL_FLOOR = 1 << 20
#: Longest command kept in a schedule (for records and display only).
COMMAND_CHARS = 200


class ConvertError(ValueError):
    """A trace that cannot be replayed; the message names it and why."""


def _owner(t: float, calls: Sequence[ToolCall], before: float, after: float) -> int | None:
    """Index of the call owning a sample at t (nearest start among windows holding it)."""
    best, dist = None, math.inf
    for i, c in enumerate(calls):
        if c.start - before <= t <= c.end + after:
            d = abs(t - c.start)
            if d < dist:
                best, dist = i, d
    return best


def _kind(call: ToolCall) -> str:
    return BASH if call.command is not None or call.tool.lower() == "bash" else INTERNAL


def _cpu(samples: Sequence[Sample]) -> float:
    values = [s.cpu_pct for s in samples if s.cpu_pct is not None]
    if not values:
        return 0.0
    return min(1.0, max(0.0, sum(values) / len(values) / 100.0))


def to_schedule(trace: Trace, speed: float = 1.0, mem_scale: float = 1.0,
                max_duration: float | None = None) -> Schedule:
    """The schedule replaying ``trace`` at ``speed`` (x faster) with memory x ``mem_scale``.

    ``max_duration`` (trace seconds) cuts the trace. Raises ConvertError for a trace without
    samples or with bad parameters.
    """
    if not (speed > 0 and math.isfinite(speed)):
        raise ConvertError(f"speed must be a positive number, not {speed}")
    if not (mem_scale > 0 and math.isfinite(mem_scale)):
        raise ConvertError(f"memory scale must be a positive number, not {mem_scale}")
    if len(trace.samples) < 2:
        raise ConvertError(f"{trace.name}: fewer than 2 memory samples; nothing to replay")
    trace.sort()
    t0 = trace.samples[0].t
    end = trace.samples[-1].t
    if max_duration is not None:
        end = min(end, t0 + max_duration)
    dt = sample_interval(trace) or 1.0
    base = baseline_bytes(trace) or 0.0
    calls = [c for c in trace.calls if c.end >= t0 and c.start < end]
    samples = [s for s in trace.samples[startup_count(trace):] if s.t <= end]

    owned: dict[int, list[Sample]] = {i: [] for i in range(len(calls))}
    owner: dict[int, int] = {}
    framework_pts: list[tuple[float, int]] = [(0.0, int(base))]
    for s in samples:
        i = _owner(s.t, calls, dt / 2, dt)
        if i is not None:
            owned[i].append(s)
            owner[id(s)] = i
            continue
        level = max(base, float(s.mem_bytes))
        if abs(level - framework_pts[-1][1]) >= FRAMEWORK_STEP:
            framework_pts.append((s.t - t0, int(level)))

    def fw_at(t_rel: float) -> float:
        level = framework_pts[0][1]
        for o, b in framework_pts:
            if o > t_rel:
                break
            level = b
        return level

    levels = [fw_at(max(c.start, t0) - t0) for c in calls]
    profiles: list[list[tuple[float, int]]] = [[] for _ in calls]

    def put(i: int, t: float, value: int) -> None:
        c = calls[i]
        start = max(c.start, t0) - t0
        duration = max(0.0, min(c.end, end) - max(c.start, t0))
        raw = t - t0 - start
        if raw >= duration and value == 0:
            return  # the call has ended and freed its memory anyway
        offset = min(max(0.0, raw), duration * 0.9)
        prof = profiles[i]
        if prof and offset <= prof[-1][0]:
            prof[-1] = (prof[-1][0], max(prof[-1][1], value) if value else prof[-1][1])
        elif not prof or prof[-1][1] != value:
            prof.append((offset, value))

    for s in samples:  # time order: a sample's memory belongs to one call at a time
        i = owner.get(id(s))
        if i is None:
            continue
        extra = s.mem_bytes - levels[i]
        put(i, s.t, int(extra * mem_scale) if extra >= CALL_FLOOR else 0)
        for j, other in enumerate(calls):
            if j != i and profiles[j] and profiles[j][-1][1] and other.start <= s.t < other.end:
                put(j, s.t, 0)

    out: list[Call] = []
    for i, c in enumerate(calls):
        start = max(c.start, t0) - t0
        duration = max(0.0, min(c.end, end) - max(c.start, t0))
        profile = profiles[i]
        if profile and profile[0][0] > 0:
            profile.insert(0, (0.0, 0))
        out.append(Call(
            index=len(out), start=start / speed, duration=duration / speed, kind=_kind(c),
            profile=[(o / speed, b) for o, b in profile], cpu=_cpu(owned[i]),
            label=call_category(c) or c.tool.lower(),
            command=(c.command or c.tool)[:COMMAND_CHARS].replace("\n", " ")))
    return Schedule(
        name=trace.name, duration=(end - t0) / speed, baseline_bytes=int(base * mem_scale),
        framework=[(o / speed, int(b * mem_scale)) for o, b in framework_pts],
        calls=out, speed=speed, mem_scale=mem_scale, source=str(trace.meta.get("path", "")))
