"""PNG figures of a characterization report (matplotlib, Agg canvas; no pyplot state).

- ``memory-<task>.png``: a task's container memory over time, tool calls shaded (Bash calls
  coloured by category), framework baseline and burst line drawn; live traces add their
  ``framework/`` and ``tools/`` series and mark agentshimd's actions (throttle, freeze, ...);
- ``category-peaks.png``: box plots of per-call peak memory by Bash category (all tasks);
- ``cdf-peak-to-avg.png``: CDF of the tasks' peak/average memory;
- ``cdf-burst-duration.png``: CDF of the burst durations (all tasks).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter, ScalarFormatter

from agentshim.report import MB, Report, TaskResult, call_category

__all__ = ["plot_category_peaks", "plot_cdf", "plot_memory", "write_plots"]

_COLORS: Final = {
    "test": "#d62728", "build": "#9467bd", "install": "#ff7f0e", "python": "#2ca02c",
    "git": "#8c564b", "file_ops": "#17becf", "other": "#e377c2", "unknown": "#bcbd22",
}
_OTHER_TOOL: Final = "#c7c7c7"
#: Sub-cgroup series of live traces drawn under the container's.
_SCOPE_COLORS: Final = {"framework": "#1f77b4", "tools": "#ff7f0e"}
#: agentshimd actions marked on a live trace's memory plot (docs/events.md).
_EVENT_MARKS: Final = {"throttle": "#bcbd22", "freeze": "#17becf", "thaw": "#2ca02c",
                       "kill": "#d62728", "oom": "#7f0000"}
_DPI: Final = 90
_LOG_TICKS: Final = (10, 20, 50, 100, 150, 200, 300, 500, 1000, 2000, 4000, 8000, 16000,
                     32000, 64000)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def plot_memory(result: TaskResult, path: Path, burst_mb: float) -> Path:
    """A task's memory over time with its tool calls shaded; returns ``path``."""
    trace = result.trace
    fig = _figure(11.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    t0 = trace.start or 0.0
    seen: dict[str, str] = {}
    for call in trace.calls:
        cat = call_category(call)
        color = _COLORS.get(cat or "", _COLORS["other"]) if cat else _OTHER_TOOL
        label = cat if cat else "other tools"
        seen.setdefault(label, color)
        ax.axvspan(call.start - t0, max(call.end, call.start + 0.2) - t0, color=color,
                   alpha=0.25 if cat else 0.35, linewidth=0)
    times = [s.t - t0 for s in trace.samples]
    mems = [s.mem_bytes / MB for s in trace.samples]
    (line,) = ax.plot(times, mems, color="black", linewidth=1.0, label="container memory")
    lines: list[Line2D] = [line]
    for scope, color in _SCOPE_COLORS.items():
        pts = [(s.t - t0, part["mem_bytes"] / MB) for s in trace.samples
               if isinstance(part := s.extra.get(scope), dict)
               and isinstance(part.get("mem_bytes"), int)]
        if pts:
            (sub,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color,
                             linewidth=0.9, label=f"{scope}/")
            lines.append(sub)
    marks = [(e["t"] - t0, e["type"]) for e in trace.events
             if e.get("type") in _EVENT_MARKS and isinstance(e.get("t"), int | float)]
    for when, kind in marks:
        ax.axvline(when, color=_EVENT_MARKS[kind], linewidth=0.8, linestyle="-.")
    handles: list[Patch | Line2D] = [
        Patch(color=c, alpha=0.4, label=f"call: {n}") for n, c in seen.items()]
    handles += [Line2D([], [], color=_EVENT_MARKS[k], linestyle="-.", linewidth=0.8,
                       label=f"agentshim: {k}") for k in sorted({k for _, k in marks})]
    if result.baseline is not None:
        base = result.baseline / MB
        handles.append(ax.axhline(base, color="#1f77b4", linestyle="--", linewidth=1,
                                  label=f"baseline {base:.0f} MB"))
        handles.append(ax.axhline(base + burst_mb, color="#d62728", linestyle=":",
                                  linewidth=1, label=f"burst line +{burst_mb:g} MB"))
    ax.set_xlabel("seconds since first sample")
    ax.set_ylabel("memory (MB)")
    ax.set_title(f"{trace.name}: memory and tool calls", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    # outside the axes, on the right: it never hides the series
    ax.legend(handles=[*lines, *handles], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1),
              borderaxespad=0)
    return _save(fig, path)


def plot_category_peaks(results: Sequence[TaskResult], path: Path) -> Path:
    """Box plots of per-call peak memory by Bash category over all tasks; returns ``path``."""
    peaks: dict[str, list[float]] = defaultdict(list)
    for result in results:
        for cat, calls in result.category_calls.items():
            peaks[cat].extend(p / MB for _, p in calls if p is not None)
    cats = sorted(peaks, key=lambda c: -float(np.median(peaks[c])) if peaks[c] else 0.0)
    cats = [c for c in cats if peaks[c]]
    fig = _figure(7, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    if cats:
        ax.boxplot([peaks[c] for c in cats], showfliers=True, whis=(5, 95),
                   flierprops={"markersize": 2})
        ax.set_xticks(range(1, len(cats) + 1), [f"{c}\n(n={len(peaks[c])})" for c in cats],
                      fontsize=8)
        ax.set_yscale("log")
        low = min(min(v) for v in peaks.values() if v)
        high = max(max(v) for v in peaks.values() if v)
        ticks = [t for t in _LOG_TICKS if low / 1.5 <= t <= high * 1.5]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.text(0.5, 0.5, "no Bash calls", ha="center", va="center", transform=ax.transAxes)
    measured = [c.peak_bytes is not None for r in results for c in r.trace.calls
                if call_category(c) is not None]
    if measured and all(measured):
        ax.set_ylabel("peak memory of the call's own cgroup (MB)", fontsize=9)
    elif any(measured):
        ax.set_ylabel("per-call peak (MB): own cgroup, else container", fontsize=9)
    else:
        ax.set_ylabel("peak container memory during call (MB)")
    ax.set_title("Per-call peak memory by command category (whiskers P5-P95)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_cdf(values: Sequence[float], path: Path, xlabel: str, title: str,
             log: bool = False) -> Path:
    """An empirical CDF of ``values``; returns ``path``."""
    fig = _figure(6, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    vals = np.sort(np.asarray([v for v in values if v is not None], dtype=float))
    if vals.size:
        ax.step(vals, np.arange(1, vals.size + 1) / vals.size, where="post")
        if log and vals.min() > 0:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title} (n={vals.size})", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _file_names(results: Sequence[TaskResult]) -> list[str]:
    """Unique file-safe names: the task name, prefixed by its parent folder on a clash."""
    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "task"

    names = [safe(r.trace.name) for r in results]
    counts: dict[str, int] = defaultdict(int)
    for name in names:
        counts[name] += 1
    out: list[str] = []
    used: set[str] = set()
    for name, result in zip(names, results, strict=True):
        if counts[name] > 1:
            parent = Path(str(result.trace.meta.get("path") or "")).parent.name
            name = f"{safe(parent)}__{name}" if parent else name
        base, n = name, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        out.append(name)
    return out


def write_plots(report: Report, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write every figure of ``report`` into ``out_dir`` (created); returns the files."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    written = [
        plot_memory(result, root / f"memory-{name}.png", report.burst_mb)
        for result, name in zip(report.tasks, _file_names(report.tasks), strict=True)
    ]
    written.append(plot_category_peaks(report.tasks, root / "category-peaks.png"))
    written.append(plot_cdf([t.row["peak_to_avg"] for t in report.tasks],
                            root / "cdf-peak-to-avg.png", "peak / average memory",
                            "CDF of peak/average memory per task"))
    written.append(plot_cdf([b.duration for t in report.tasks for b in t.bursts],
                            root / "cdf-burst-duration.png", "burst duration (s)",
                            f"CDF of memory burst durations (> baseline + "
                            f"{report.burst_mb:g} MB)"))
    return written
