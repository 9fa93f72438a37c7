"""Characterization metrics of agent traces: pure functions on :class:`~agentshim.trace.Trace`.

Every metric is defined in docs/characterization.md; the short version is in each function's
docstring. Memory is reported in decimal MB (10**6 bytes, as podman prints it), times in
seconds, CPU in percent of one core. ``dt`` is a trace's sampling interval: the median gap
between consecutive samples.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from agentshim.trace.dataset import classify_command
from agentshim.trace.model import ToolCall, Trace
from agentshim.units import MB

__all__ = [
    "BASELINE_PERCENTILE",
    "DEFAULT_BURST_MB",
    "MB",
    "Burst",
    "Report",
    "TaskResult",
    "analyze",
    "baseline_bytes",
    "build_report",
    "call_category",
    "call_peak_bytes",
    "category_stats",
    "cpu_avg_pct",
    "cpu_mem_corr",
    "find_bursts",
    "format_text",
    "live_series",
    "max_rise_mb_per_s",
    "merged_windows",
    "sample_interval",
    "spread",
    "startup_count",
    "task_duration",
    "tool_time_by_tool",
    "tool_time_share",
]

DEFAULT_BURST_MB: Final = 300.0
#: The framework baseline is this percentile of the samples outside tool calls.
BASELINE_PERCENTILE: Final = 10.0
#: Fewer samples outside tool calls than this and the baseline uses all samples after startup.
MIN_OUTSIDE_SAMPLES: Final = 5
#: Category of a Bash call whose command line the trace does not have (older dataset format).
UNKNOWN_CATEGORY: Final = "unknown"
#: Task metrics summarized across tasks in ``aggregate.spread``.
SPREAD_METRICS: Final = ("duration_s", "peak_mb", "avg_mb", "baseline_mb", "peak_to_avg",
                         "burst_count", "bursts_in_tool_calls", "tool_time_share", "cpu_avg_pct",
                         "cpu_mem_corr", "max_rise_mb_per_s")


# --------------------------------------------------------------------------- building blocks


def sample_interval(trace: Trace) -> float | None:
    """Median gap between consecutive samples (seconds); None with fewer than 2 samples."""
    gaps = [b.t - a.t for a, b in zip(trace.samples, trace.samples[1:], strict=False)
            if b.t > a.t]
    return float(statistics.median(gaps)) if gaps else None


def task_duration(trace: Trace) -> float:
    """Seconds from the first to the last sample (from calls when there are no samples)."""
    start, end = trace.start, trace.end
    return max(0.0, end - start) if start is not None and end is not None else 0.0


def merged_windows(windows: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of time windows as sorted, disjoint (start, end) pairs."""
    merged: list[list[float]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def tool_time_share(trace: Trace) -> float | None:
    """Share of the task's duration covered by at least one tool call (union of the call
    windows, clipped to the sampled span, so parallel calls count once); None if duration 0."""
    duration = task_duration(trace)
    if duration <= 0 or trace.start is None or trace.end is None:
        return None
    lo, hi = trace.start, trace.end
    covered = sum(max(0.0, min(b, hi) - max(a, lo))
                  for a, b in merged_windows((c.start, c.end) for c in trace.calls))
    return covered / duration


def tool_time_by_tool(trace: Trace) -> dict[str, float]:
    """Summed call durations per tool name (overlapping calls each count in full)."""
    out: dict[str, float] = defaultdict(float)
    for call in trace.calls:
        out[call.tool] += call.duration
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def call_category(call: ToolCall) -> str | None:
    """Category of a Bash-like call: its recorded category, else its command classified,
    else ``unknown`` for a Bash call without command; None for other tools."""
    if call.category:
        return call.category
    if call.command is not None:
        return classify_command(call.command)
    if call.tool.lower() == "bash":
        return UNKNOWN_CATEGORY
    return None


def _samples_between(trace: Trace, lo: float, hi: float) -> list[int]:
    return [s.mem_bytes for s in trace.samples if lo <= s.t <= hi]


def call_peak_bytes(trace: Trace, call: ToolCall, dt: float | None = None) -> int | None:
    """Peak memory of a call: the call's own measured peak (``peak_bytes``) when the trace
    has it, else the highest container sample within the call window widened by half a
    sampling interval on each side (so even a short call gets its nearest sample). Nothing
    is subtracted: the framework's own memory is included. None when no sample is near."""
    if call.peak_bytes is not None:
        return call.peak_bytes
    if dt is None:
        dt = sample_interval(trace) or 0.0
    values = _samples_between(trace, call.start - dt / 2, call.end + dt / 2)
    return max(values) if values else None


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def category_stats(trace: Trace) -> dict[str, dict[str, Any]]:
    """Per category of Bash-like calls: count, time_s (summed durations), time_share (of all
    categorized call time), peak_mb_p50/peak_mb_p95 of the per-call peaks (linear percentile)."""
    return _category_table(_category_calls(trace))


def _category_calls(trace: Trace) -> dict[str, list[tuple[float, int | None]]]:
    """category -> [(duration, peak bytes)] of the trace's Bash-like calls."""
    dt = sample_interval(trace)
    out: dict[str, list[tuple[float, int | None]]] = defaultdict(list)
    for call in trace.calls:
        cat = call_category(call)
        if cat is not None:
            out[cat].append((call.duration, call_peak_bytes(trace, call, dt)))
    return out


def _category_table(calls: dict[str, list[tuple[float, int | None]]]) -> dict[str, dict[str, Any]]:
    total = sum(d for rows in calls.values() for d, _ in rows)
    table: dict[str, dict[str, Any]] = {}
    for cat in sorted(calls, key=lambda c: (-sum(d for d, _ in calls[c]), c)):
        rows = calls[cat]
        time_s = sum(d for d, _ in rows)
        peaks = [p / MB for _, p in rows if p is not None]
        table[cat] = {
            "count": len(rows),
            "time_s": _r(time_s, 2),
            "time_share": _r(time_s / total, 4) if total > 0 else None,
            "peak_mb_p50": _r(_percentile(peaks, 50), 1) if peaks else None,
            "peak_mb_p95": _r(_percentile(peaks, 95), 1) if peaks else None,
        }
    return table


def _in_windows(t: float, windows: Sequence[tuple[float, float]], slack: float) -> bool:
    return any(a - slack <= t <= b + slack for a, b in windows)


def startup_count(trace: Trace) -> int:
    """Number of leading samples that belong to the container's start: those before the
    first sample reaching half the trace's median memory (runtime up, agent not loaded)."""
    if not trace.samples:
        return 0
    half = statistics.median(s.mem_bytes for s in trace.samples) / 2
    return next(i for i, s in enumerate(trace.samples) if s.mem_bytes >= half)


def baseline_bytes(trace: Trace, percentile: float = BASELINE_PERCENTILE) -> float | None:
    """Framework baseline: the ``percentile`` (default 10th, linear) of the memory samples
    after startup (:func:`startup_count`) taken outside every tool call window widened by
    one sampling interval on each side; all samples after startup when fewer than
    :data:`MIN_OUTSIDE_SAMPLES` are outside. None without samples."""
    if not trace.samples:
        return None
    dt = sample_interval(trace) or 0.0
    windows = merged_windows((c.start, c.end) for c in trace.calls)
    after = trace.samples[startup_count(trace):]
    outside = [s.mem_bytes for s in after if not _in_windows(s.t, windows, dt)]
    if len(outside) < MIN_OUTSIDE_SAMPLES:
        outside = [s.mem_bytes for s in after]
    return _percentile(outside, percentile)


@dataclass(frozen=True)
class Burst:
    """A run of consecutive samples above baseline + threshold."""

    start: float
    end: float
    peak_bytes: int
    in_tool_call: bool

    @property
    def duration(self) -> float:
        """Seconds from the first sample above to the first sample back below."""
        return self.end - self.start


def find_bursts(trace: Trace, burst_mb: float = DEFAULT_BURST_MB,
                baseline: float | None = None) -> list[Burst]:
    """Memory bursts: maximal runs of consecutive samples with memory > baseline + burst_mb MB.

    A burst starts at its first sample above and ends at the first sample back at or below
    the line (a burst still above at the last sample ends one sampling interval after it). It
    is inside a tool call when its start lies within some call window widened by one sampling
    interval on each side.
    """
    if baseline is None:
        baseline = baseline_bytes(trace)
    if baseline is None or not trace.samples:
        return []
    line = baseline + burst_mb * MB
    dt = sample_interval(trace) or 0.0
    windows = merged_windows((c.start, c.end) for c in trace.calls)
    bursts: list[Burst] = []
    first: int | None = None
    samples = trace.samples
    for i, sample in enumerate([*samples, None]):
        above = sample is not None and sample.mem_bytes > line
        if above and first is None:
            first = i
        elif not above and first is not None:
            end = sample.t if sample is not None else samples[-1].t + dt
            start = samples[first].t
            peak = max(s.mem_bytes for s in samples[first:i])
            bursts.append(Burst(start, end, peak, _in_windows(start, windows, dt)))
            first = None
    return bursts


def max_rise_mb_per_s(trace: Trace) -> float | None:
    """Largest memory rise between consecutive samples after startup, in MB per second of
    their gap (the agent's own start-up ramp is not a burst)."""
    after = trace.samples[startup_count(trace):]
    rates = [(b.mem_bytes - a.mem_bytes) / MB / (b.t - a.t)
             for a, b in zip(after, after[1:], strict=False) if b.t > a.t]
    return max(rates) if rates else None


def cpu_avg_pct(trace: Trace) -> float | None:
    """Mean CPU percent over the samples that have one (100 = one core busy)."""
    values = [s.cpu_pct for s in trace.samples if s.cpu_pct is not None]
    return statistics.fmean(values) if values else None


def cpu_mem_corr(trace: Trace) -> float | None:
    """Pearson correlation of CPU percent and memory over the samples after startup that
    have both; None with fewer than 3 such samples or when either series is constant."""
    after = trace.samples[startup_count(trace):]
    pairs = [(s.cpu_pct, s.mem_bytes) for s in after if s.cpu_pct is not None]
    if len(pairs) < 3:
        return None
    cpu = np.array([p[0] for p in pairs], dtype=float)
    mem = np.array([p[1] for p in pairs], dtype=float)
    if np.ptp(cpu) == 0 or np.ptp(mem) == 0:
        return None
    with np.errstate(all="ignore"):
        r = float(np.corrcoef(cpu, mem)[0, 1])
    return r if math.isfinite(r) else None


def _scope_values(trace: Trace, scope: str) -> list[int]:
    out: list[int] = []
    for sample in trace.samples:
        part = sample.extra.get(scope)
        if isinstance(part, dict) and isinstance(part.get("mem_bytes"), int):
            out.append(part["mem_bytes"])
    return out


def _stall_s(trace: Trace, key: str) -> float | None:
    totals = [psi[key] for s in trace.samples
              if isinstance(psi := s.extra.get("mem_psi"), dict)
              and isinstance(psi.get(key), int)]
    return (totals[-1] - totals[0]) / 1e6 if len(totals) >= 2 else None


def live_series(trace: Trace) -> dict[str, float | None]:
    """What only a live trace (``agentshim trace``) has, all None otherwise:
    ``framework_avg_mb``/``framework_peak_mb`` (the agent's own cgroup), ``tools_avg_mb``/
    ``tools_peak_mb`` (all tool calls together), ``mem_stall_s``/``mem_full_stall_s`` (the
    container's memory PSI some/full stall time over the trace) and ``recorder_cpu_pct``
    (the recorder's own CPU use, from meta)."""
    framework, tools = _scope_values(trace, "framework"), _scope_values(trace, "tools")
    rec_cpu = trace.meta.get("recorder_cpu_pct")
    return {
        "framework_avg_mb": _r(statistics.fmean(framework) / MB, 1) if framework else None,
        "framework_peak_mb": _r(max(framework) / MB, 1) if framework else None,
        "tools_avg_mb": _r(statistics.fmean(tools) / MB, 1) if tools else None,
        "tools_peak_mb": _r(max(tools) / MB, 1) if tools else None,
        "mem_stall_s": _r(_stall_s(trace, "some_total_us"), 3),
        "mem_full_stall_s": _r(_stall_s(trace, "full_total_us"), 3),
        "recorder_cpu_pct": _r(rec_cpu, 3)
        if isinstance(rec_cpu, int | float) and not isinstance(rec_cpu, bool) else None,
    }


def spread(values: Iterable[float | None]) -> dict[str, Any]:
    """min/median/max/mean and coefficient of variation (population stdev / mean) of the
    values that are not None; cv None when the mean is 0."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"n": 0, "min": None, "median": None, "max": None, "mean": None, "cv": None}
    mean = statistics.fmean(vals)
    cv = statistics.pstdev(vals) / abs(mean) if mean != 0 else None
    return {"n": len(vals), "min": _r(min(vals), 4), "median": _r(statistics.median(vals), 4),
            "max": _r(max(vals), 4), "mean": _r(mean, 4), "cv": _r(cv, 4)}


def _r(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


# --------------------------------------------------------------------------- the report


@dataclass
class TaskResult:
    """One task's metrics (``row``, the JSON object) plus what plots and the aggregate need."""

    trace: Trace
    row: dict[str, Any]
    bursts: list[Burst]
    baseline: float | None
    category_calls: dict[str, list[tuple[float, int | None]]] = field(default_factory=dict)


def analyze(trace: Trace, burst_mb: float = DEFAULT_BURST_MB) -> TaskResult:
    """All metrics of one trace."""
    mems = [s.mem_bytes for s in trace.samples]
    peak = max(mems) / MB if mems else None
    avg = statistics.fmean(mems) / MB if mems else None
    baseline = baseline_bytes(trace)
    bursts = find_bursts(trace, burst_mb, baseline)
    inside = sum(b.in_tool_call for b in bursts)
    cat_calls = _category_calls(trace)
    row: dict[str, Any] = {
        "task": trace.name,
        "path": trace.meta.get("path"),
        "samples": len(trace.samples),
        "calls": len(trace.calls),
        "ends_estimated": sum(c.end_estimated for c in trace.calls),
        "sample_interval_s": _r(sample_interval(trace), 3),
        "duration_s": _r(task_duration(trace), 2),
        "peak_mb": _r(peak, 1),
        "avg_mb": _r(avg, 1),
        "baseline_mb": _r(baseline / MB if baseline is not None else None, 1),
        "peak_to_avg": _r(peak / avg, 3) if peak is not None and avg else None,
        "burst_count": len(bursts),
        "bursts_in_tool_calls": _r(inside / len(bursts), 4) if bursts else None,
        "burst_durations_s": [_r(b.duration, 2) for b in bursts],
        "tool_time_share": _r(tool_time_share(trace), 4),
        "cpu_avg_pct": _r(cpu_avg_pct(trace), 2),
        "cpu_mem_corr": _r(cpu_mem_corr(trace), 3),
        "max_rise_mb_per_s": _r(max_rise_mb_per_s(trace), 1),
        **live_series(trace),
        "categories": _category_table(cat_calls),
        "tool_time_s": {k: _r(v, 2) for k, v in tool_time_by_tool(trace).items()},
    }
    return TaskResult(trace, row, bursts, baseline, cat_calls)


@dataclass
class Report:
    """The report over several traces: per-task results and the aggregate."""

    tasks: list[TaskResult]
    aggregate: dict[str, Any]
    burst_mb: float = DEFAULT_BURST_MB

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: {"tasks": [...], "aggregate": {...}}."""
        return {"tasks": [t.row for t in self.tasks], "aggregate": self.aggregate}


def _aggregate(results: Sequence[TaskResult], burst_mb: float) -> dict[str, Any]:
    rows = [r.row for r in results]
    bursts = [b for r in results for b in r.bursts]
    pooled: dict[str, list[tuple[float, int | None]]] = defaultdict(list)
    for result in results:
        for cat, calls in result.category_calls.items():
            pooled[cat].extend(calls)
    tool_time: dict[str, float] = defaultdict(float)
    for result in results:
        for tool, secs in tool_time_by_tool(result.trace).items():
            tool_time[tool] += secs
    durations = [b.duration for b in bursts]
    covered = sum((r.row["tool_time_share"] or 0.0) * (r.row["duration_s"] or 0.0)
                  for r in results)
    total_duration = sum(r.row["duration_s"] or 0.0 for r in results)
    categories = _category_table(pooled)
    p50s = {c: v["peak_mb_p50"] for c, v in categories.items()
            if v["peak_mb_p50"] and c != UNKNOWN_CATEGORY}
    return {
        "task_count": len(rows),
        "burst_mb": burst_mb,
        "baseline_percentile": BASELINE_PERCENTILE,
        "burst_count": len(bursts),
        "bursts_in_tool_calls": _r(sum(b.in_tool_call for b in bursts) / len(bursts), 4)
        if bursts else None,
        "burst_duration_s": {
            "p50": _r(_percentile(durations, 50), 2) if durations else None,
            "p95": _r(_percentile(durations, 95), 2) if durations else None,
            "max": _r(max(durations), 2) if durations else None,
        },
        "tool_time_share": _r(covered / total_duration, 4) if total_duration > 0 else None,
        "spread": {m: spread(row.get(m) for row in rows) for m in SPREAD_METRICS},
        "categories": categories,
        "category_peak_p50_ratio": _r(max(p50s.values()) / min(p50s.values()), 2)
        if len(p50s) >= 2 else None,
        "tool_time_s": {k: _r(v, 2) for k, v in sorted(tool_time.items(),
                                                       key=lambda kv: (-kv[1], kv[0]))},
        "ends_estimated": sum(r.row["ends_estimated"] for r in results),
    }


def build_report(traces: Iterable[Trace], burst_mb: float = DEFAULT_BURST_MB) -> Report:
    """Analyze every trace and aggregate across them."""
    results = [analyze(t, burst_mb) for t in traces]
    return Report(results, _aggregate(results, burst_mb), burst_mb)


# --------------------------------------------------------------------------- text output


def _fmt(value: Any, spec: str = "", none: str = "-") -> str:
    if value is None:
        return none
    if spec == "%":
        return f"{100 * value:.1f}%"
    if spec == "auto":
        size = abs(value)
        return f"{value:.0f}" if size >= 100 else f"{value:.1f}" if size >= 10 else (
            f"{value:.3g}")
    return format(value, spec)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_text(report: Report) -> str:
    """The report as readable text tables (per task, spread, categories, tools)."""
    agg = report.aggregate
    out: list[str] = []
    task_rows = [
        [r["task"][:44], _fmt(r["duration_s"], ".0f"), _fmt(r["peak_mb"], ".0f"),
         _fmt(r["avg_mb"], ".0f"), _fmt(r["baseline_mb"], ".0f"), _fmt(r["peak_to_avg"], ".2f"),
         str(r["burst_count"]), _fmt(r["bursts_in_tool_calls"], "%"),
         _fmt(r["tool_time_share"], "%"), _fmt(r["cpu_avg_pct"], ".1f"),
         _fmt(r["cpu_mem_corr"], ".2f"), _fmt(r["max_rise_mb_per_s"], ".0f")]
        for r in (t.row for t in report.tasks)]
    out += _table(["task", "dur s", "peak MB", "avg MB", "base MB", "pk/avg", "bursts",
                   "in call", "tool time", "cpu %", "corr", "rise MB/s"], task_rows)
    est = agg["ends_estimated"]
    out.append("")
    out.append(f"{agg['task_count']} task(s); bursts = memory > baseline + "
               f"{report.burst_mb:g} MB; baseline = P{BASELINE_PERCENTILE:g} of the samples "
               f"outside tool calls after start-up; memory in decimal MB (10^6 bytes)")
    if est:
        out.append(f"note: {est} call end(s) estimated (older tool_calls format): tool time "
                   f"and 'in call' are upper bounds for those tasks")
    out.append("")
    live = [r for r in (t.row for t in report.tasks)
            if r["framework_avg_mb"] is not None or r["mem_stall_s"] is not None]
    if live:
        out += _table(
            ["live trace", "framework avg MB", "framework peak MB", "tools avg MB",
             "tools peak MB", "mem stall s", "full stall s", "recorder cpu %"],
            [[r["task"][:44], _fmt(r["framework_avg_mb"], ".1f"),
              _fmt(r["framework_peak_mb"], ".1f"), _fmt(r["tools_avg_mb"], ".1f"),
              _fmt(r["tools_peak_mb"], ".1f"), _fmt(r["mem_stall_s"], ".2f"),
              _fmt(r["mem_full_stall_s"], ".2f"), _fmt(r["recorder_cpu_pct"], ".2f")]
             for r in live])
        out.append("")
    labels = {"duration_s": "duration s", "peak_mb": "peak MB", "avg_mb": "avg MB",
              "baseline_mb": "baseline MB", "peak_to_avg": "peak/avg",
              "burst_count": "bursts", "bursts_in_tool_calls": "bursts in calls",
              "tool_time_share": "tool time share", "cpu_avg_pct": "cpu avg %",
              "cpu_mem_corr": "cpu-mem corr", "max_rise_mb_per_s": "max rise MB/s"}
    spread_rows = [[labels[m], str(s["n"]), _fmt(s["min"], "auto"),
                    _fmt(s["median"], "auto"), _fmt(s["max"], "auto"), _fmt(s["cv"], ".2f")]
                   for m, s in agg["spread"].items()]
    out += _table(["across tasks", "n", "min", "median", "max", "cv"], spread_rows)
    out.append("")
    bd = agg["burst_duration_s"]
    out.append(f"bursts: {agg['burst_count']}, inside tool calls: "
               f"{_fmt(agg['bursts_in_tool_calls'], '%')}, duration P50 "
               f"{_fmt(bd['p50'], '.1f')} s, P95 {_fmt(bd['p95'], '.1f')} s, max "
               f"{_fmt(bd['max'], '.1f')} s; time in tool calls: "
               f"{_fmt(agg['tool_time_share'], '%')}")
    out.append("")
    cat_rows = [[c, str(v["count"]), _fmt(v["time_s"], ".0f"), _fmt(v["time_share"], "%"),
                 _fmt(v["peak_mb_p50"], ".0f"), _fmt(v["peak_mb_p95"], ".0f")]
                for c, v in agg["categories"].items()]
    if cat_rows:
        out += _table(["bash category", "calls", "time s", "time share", "peak P50 MB",
                       "peak P95 MB"], cat_rows)
        if agg["category_peak_p50_ratio"] is not None:
            out.append(f"largest/smallest category P50 peak: "
                       f"{agg['category_peak_p50_ratio']:.2f}x")
        out.append("")
    tool_rows = [[tool, _fmt(secs, ".0f")] for tool, secs in agg["tool_time_s"].items()]
    if tool_rows:
        out += _table(["tool", "time s"], tool_rows)
    return "\n".join(out).rstrip() + "\n"
