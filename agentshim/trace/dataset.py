"""Importer for the published agent-trace dataset (one directory per task).

Files of a task directory (see docs/characterization.md, "The dataset importer"):

- ``resources.json``: ``{"samples": [{"timestamp", "epoch", "mem_usage": "185.5MB / 134.5GB",
  "cpu_percent": "60.78%", ...}], "summary": {...}}``, ``podman stats`` about once a second.
  Times come from ``epoch`` (``timestamp`` is local time without a zone and is ignored).
  Sizes are parsed as podman prints them: ``B``/``kB``/``MB``/``GB``/``TB`` are decimal
  (powers of 1000), ``KiB``/``MiB``/``GiB``/``TiB`` binary. A sample reading ``0B / 0B`` is
  podman's "container not running" and is dropped. ``cpu_percent`` of ``podman stats
  --no-stream`` is the average since the container started, not the CPU of the last second:
  such a series is detected and turned into per-interval CPU (:func:`interval_cpu`).
- ``tool_calls.json``: ``[{"timestamp": ISO UTC, "end_timestamp": ISO UTC, "tool", "id",
  "input": {"command": ...}, "result_preview"}, ...]``. Timestamps without a zone are taken as
  UTC. The older format (no ``end_timestamp``/``input``) gets estimated ends, see
  :func:`estimate_ends`.
- ``results.json`` (optional): a few scalar fields (image, model, times) are kept in ``meta``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from agentshim.trace.model import Sample, ToolCall, Trace, TraceError

__all__ = [
    "IN_PROCESS_TOOLS",
    "IN_PROCESS_CAP_S",
    "classify_command",
    "estimate_ends",
    "find_traces",
    "interval_cpu",
    "is_dataset_dir",
    "is_trace_dir",
    "load_dataset",
    "parse_percent",
    "parse_podman_size",
    "parse_time",
]

RESOURCES: Final = "resources.json"
TOOL_CALLS: Final = "tool_calls.json"
RESULTS: Final = "results.json"
#: The marker file of the project's own format (see agentshim.trace.format).
OWN_META: Final = "meta.json"

#: Claude Code tools that run inside the agent's own process and finish in well under a second
#: (on the traces with real end times, 99% of them take < 4 s and the median is < 0.05 s).
IN_PROCESS_TOOLS: Final = frozenset({
    "Read", "Edit", "MultiEdit", "Write", "Grep", "Glob", "LS", "TodoWrite", "NotebookRead",
    "NotebookEdit", "ExitPlanMode", "BashOutput", "KillShell", "KillBash",
})
#: Longest estimated duration of an in-process tool call whose end is unknown (seconds).
IN_PROCESS_CAP_S: Final = 1.0

_SIZE_RE: Final = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*")
_SIZE_UNITS: Final[dict[str, float]] = {
    "": 1.0, "b": 1.0,
    "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
    "kib": 1024.0, "mib": 1024.0**2, "gib": 1024.0**3, "tib": 1024.0**4,
}
#: Scalar fields of results.json copied into Trace.meta.
_RESULT_KEYS: Final = ("image", "model", "claude_time", "total_time", "pull_time",
                       "memory_limit", "cpu_limit", "start_time")


def parse_podman_size(text: str | int | float) -> int:
    """Bytes of a size as podman prints it (``185.5MB``, ``1.461GB``, ``11.68kB``, ``2GiB``).

    ``kB``/``MB``/``GB``/``TB`` are decimal, ``KiB``/``MiB``/``GiB``/``TiB`` binary; a plain
    number is bytes. Raises ValueError on anything else.
    """
    if isinstance(text, bool):
        raise ValueError(f"bad size {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"bad size {text!r}")
        return round(text)
    if not isinstance(text, str):
        raise ValueError(f"bad size {text!r} (expected text such as '185.5MB')")
    match = _SIZE_RE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"bad size {text!r} (expected e.g. '185.5MB', '1.2GB', '512MiB')")
    value = float(match.group(1)) * _SIZE_UNITS[unit]
    if not math.isfinite(value):
        raise ValueError(f"bad size {text!r} (too large)")
    return round(value)


def parse_percent(text: str | int | float | None) -> float | None:
    """``"60.78%"`` -> 60.78; None, ``""`` and ``"--"`` (podman's "no value") -> None."""
    if text is None:
        return None
    if isinstance(text, bool):
        raise ValueError(f"bad percentage {text!r}")
    if isinstance(text, int | float):
        value = float(text)
    elif isinstance(text, str):
        body = text.strip().removesuffix("%").strip()
        if body in ("", "--"):
            return None
        try:
            value = float(body)
        except ValueError:
            raise ValueError(f"bad percentage {text!r} (expected e.g. '60.78%')") from None
    else:
        raise ValueError(f"bad percentage {text!r}")
    if not math.isfinite(value):
        raise ValueError(f"bad percentage {text!r}")
    return value


def parse_time(text: str | int | float) -> float:
    """Epoch seconds of an ISO time (``2026-02-07T10:54:03.975Z``; no zone = UTC) or a number."""
    if isinstance(text, bool):
        raise ValueError(f"bad time {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text):
            raise ValueError(f"bad time {text!r}")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"bad time {text!r} (expected an ISO time such as "
                         "'2026-02-07T10:54:03.975Z')")
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"bad time {text!r} (expected an ISO time such as "
                         "'2026-02-07T10:54:03.975Z')") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg}") from None
    except RecursionError:
        raise TraceError(f"{path}: JSON nested too deeply") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _samples(path: Path, data: Any) -> tuple[list[Sample], dict[str, Any]]:
    rows = data.get("samples") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise TraceError(f"{path}: expected an object with a 'samples' list")
    samples: list[Sample] = []
    limits: Counter[int] = Counter()
    dropped = 0
    for i, row in enumerate(rows):
        where = f"{path}: sample {i}"
        if not isinstance(row, dict):
            raise TraceError(f"{where}: expected an object, got {type(row).__name__}")
        try:
            if "epoch" in row:
                t = parse_time(row["epoch"])
            elif isinstance(row.get("timestamp"), str) and _has_zone(row["timestamp"]):
                t = parse_time(row["timestamp"])
            else:
                raise ValueError("no 'epoch' (and its 'timestamp' has no time zone)")
            usage = row.get("mem_usage")
            if usage is None:
                raise ValueError("no 'mem_usage'")
            limit: int | None = None
            if isinstance(usage, str):
                used_text, _, limit_text = usage.partition("/")
                used = parse_podman_size(used_text)
                limit = parse_podman_size(limit_text) if limit_text.strip() else None
            else:
                used = parse_podman_size(usage)
            cpu = parse_percent(row.get("cpu_percent"))
        except ValueError as exc:
            raise TraceError(f"{where}: {exc}") from None
        if used == 0 and limit == 0:
            dropped += 1  # podman prints "0B / 0B" once the container is gone
            continue
        if limit:
            limits[limit] += 1
        samples.append(Sample(t, used, cpu))
    samples.sort(key=lambda x: x.t)
    converted, source = interval_cpu([x.t for x in samples], [x.cpu_pct for x in samples])
    for sample, cpu in zip(samples, converted, strict=True):
        sample.cpu_pct = cpu
    info: dict[str, Any] = {"dropped_samples": dropped, "cpu_percent_source": source}
    if limits:
        info["mem_limit_bytes"] = limits.most_common(1)[0][0]
    return samples, info


#: A cumulative CPU series may lose this much CPU time between samples to podman's rounding
#: (two values printed to 0.01 percentage points), as a fraction of the elapsed time.
_CPU_ROUNDING: Final = 0.0001
#: At most this share of intervals may lose CPU time for a series to count as cumulative.
_CUMULATIVE_MAX_DROPS: Final = 0.02


def interval_cpu(times: list[float], cpus: list[float | None]) -> tuple[list[float | None], str]:
    """Per-interval CPU percent from podman's ``--no-stream`` series, and what was found.

    With ``--no-stream`` podman prints the average CPU since the container started (there is
    no previous reading), so ``cpu * (t - start) / 100`` is the CPU time used so far. When the
    series behaves like that (CPU time never drops by more than rounding in at least 98% of
    the intervals), it is taken as cumulative from the first sample's time: each sample gets
    the CPU used since the previous one divided by the gap (the first keeps its own value),
    from the running maximum of the CPU time, so rounding never gives negative CPU. Returns
    ``(values, "cumulative")``; any other series is returned unchanged with ``"interval"``
    (``"none"`` when it has fewer than 3 values).
    """
    known = [(t, c) for t, c in zip(times, cpus, strict=True) if c is not None]
    if len(known) < 3:
        return list(cpus), "none" if not known else "interval"
    start = known[0][0]
    used = [c / 100 * (t - start) for t, c in known]
    drops = sum(1 for (t, _), a, b in zip(known[1:], used, used[1:], strict=False)
                if b < a - _CPU_ROUNDING * (t - start) - 1e-9)
    if drops > _CUMULATIVE_MAX_DROPS * (len(known) - 1):
        return list(cpus), "interval"
    out: list[float | None] = []
    prev_t, prev_used, prev_pct = start, 0.0, known[0][1]
    for t, c in zip(times, cpus, strict=True):
        if c is None:
            out.append(None)
            continue
        total = max(prev_used, c / 100 * (t - start))
        pct = prev_pct if t <= prev_t else 100 * (total - prev_used) / (t - prev_t)
        out.append(pct)
        prev_t, prev_used, prev_pct = t, total, pct
    return out, "cumulative"


def _has_zone(text: str) -> bool:
    try:
        return datetime.fromisoformat(text.strip()).tzinfo is not None
    except ValueError:
        return False


def classify_command(command: str) -> str:
    """Category of a Bash command line, via :func:`agentshim.policy.classify` (default policy).

    The one place the report and the importer classify commands; falls back to a small
    keyword rule set if the policy module is unavailable.
    """
    classify = _classifier()
    try:
        return classify(command)
    except Exception:  # classification must never break an import
        return "other"


_CLASSIFIER: Callable[[str], str] | None = None


def _classifier() -> Callable[[str], str]:
    global _CLASSIFIER
    if _CLASSIFIER is None:
        try:
            from agentshim import policy as _policy

            default = _policy.load_policy({})

            def _with_policy(command: str) -> str:
                return _policy.classify(command, default)

            _CLASSIFIER = _with_policy
        except Exception:  # policy module missing or broken: keep the report usable
            _CLASSIFIER = _fallback_classify
    return _CLASSIFIER


_FALLBACK_RULES: Final = (
    ("test", re.compile(r"\b(pytest|py\.test|tox|nox|unittest|go test|npm test|cargo test)\b")),
    ("install", re.compile(r"\b(pip3? install|apt(-get)? install|npm install|conda install)\b")),
    ("build", re.compile(r"\b(make|cmake|gcc|cargo build|go build|setup\.py build)\b")),
    ("python", re.compile(r"\bpython[0-9.]*\b")),
    ("git", re.compile(r"^\s*(cd [^;&|]+(&&|;)\s*)?git\b")),
    ("file_ops", re.compile(r"^\s*(cd [^;&|]+(&&|;)\s*)?(ls|cat|grep|find|sed|head|tail|wc|"
                            r"cp|mv|rm|mkdir|tree|diff)\b")),
)


def _fallback_classify(command: str) -> str:
    for name, rule in _FALLBACK_RULES:
        if rule.search(command):
            return name
    return "other"


def estimate_ends(calls: list[ToolCall], trace_end: float | None) -> int:
    """Give calls without a known end (``end_estimated`` True) an estimated end, in place.

    The end is the start of the next call that starts strictly later, else ``trace_end``
    (the last sample), never before the call's start; a call of an in-process tool
    (:data:`IN_PROCESS_TOOLS`) is capped at :data:`IN_PROCESS_CAP_S`. The next call's start
    is an upper bound of the real end (it also holds the model's thinking time), so the
    estimated windows are too long, never too short. Returns how many ends were estimated.
    """
    ordered = sorted(calls, key=lambda c: c.start)
    starts = [c.start for c in ordered]
    count = 0
    for i, call in enumerate(ordered):
        if not call.end_estimated:
            continue
        later = next((s for s in starts[i + 1:] if s > call.start), None)
        end = later if later is not None else trace_end
        if end is None or end < call.start:
            end = call.start
        if call.tool in IN_PROCESS_TOOLS:
            end = min(end, call.start + IN_PROCESS_CAP_S)
        call.end = end
        count += 1
    return count


def _calls(path: Path, data: Any) -> list[ToolCall]:
    rows = data
    if isinstance(data, dict):
        rows = data.get("tool_calls", data.get("calls"))
    if not isinstance(rows, list):
        raise TraceError(f"{path}: expected a list of tool calls")
    calls: list[ToolCall] = []
    for i, row in enumerate(rows):
        where = f"{path}: call {i}"
        if not isinstance(row, dict):
            raise TraceError(f"{where}: expected an object, got {type(row).__name__}")
        try:
            if "timestamp" not in row:
                raise ValueError("no 'timestamp'")
            start = parse_time(row["timestamp"])
            end_raw = row.get("end_timestamp")
            end = parse_time(end_raw) if end_raw is not None else start
        except ValueError as exc:
            raise TraceError(f"{where}: {exc}") from None
        if end < start:
            raise TraceError(f"{where}: end_timestamp is before timestamp")
        tool = row.get("tool")
        tool = str(tool) if tool is not None else "unknown"
        inp = row.get("input")
        command = None
        if isinstance(inp, dict) and isinstance(inp.get("command"), str):
            command = inp["command"]
        extra: dict[str, Any] = {}
        if isinstance(inp, dict) and isinstance(inp.get("description"), str):
            extra["description"] = inp["description"]
        calls.append(ToolCall(
            start=start, end=end, tool=tool, command=command,
            category=classify_command(command) if command is not None else None,
            id=str(row["id"]) if row.get("id") is not None else None,
            end_estimated=end_raw is None, extra=extra,
        ))
    return calls


def _results(path: Path) -> tuple[dict[str, Any], list[str]]:
    if not path.exists():
        return {}, []
    try:
        data = _read_json(path)
    except TraceError as exc:
        return {}, [f"ignored: {exc}"]
    if not isinstance(data, dict):
        return {}, [f"ignored {path}: not a JSON object"]
    kept = {k: data[k] for k in _RESULT_KEYS
            if isinstance(data.get(k), str | int | float) and not isinstance(data.get(k), bool)}
    info = data.get("image_info")
    if isinstance(info, dict) and isinstance(info.get("size_bytes"), int):
        kept["image_size_bytes"] = info["size_bytes"]
    return kept, []


def is_dataset_dir(path: Path) -> bool:
    """True when ``path`` is a task directory of the published dataset (has resources.json)."""
    return (Path(path) / RESOURCES).is_file()


def is_trace_dir(path: Path) -> bool:
    """True when ``path`` holds a trace in either format (dataset or agentshim's own)."""
    path = Path(path)
    return is_dataset_dir(path) or (path / OWN_META).is_file()


def load_dataset(path: str | os.PathLike[str]) -> Trace:
    """Read one task directory of the published dataset into a :class:`Trace`.

    Raises :class:`TraceError` naming the file for a missing or malformed trace.
    """
    root = Path(path)
    if not root.is_dir():
        raise TraceError(f"{root}: not a directory" if root.exists() else
                         f"{root}: no such trace directory")
    samples, info = _samples(root / RESOURCES, _read_json(root / RESOURCES))
    calls = _calls(root / TOOL_CALLS, _read_json(root / TOOL_CALLS))
    results, warnings = _results(root / RESULTS)
    trace = Trace(name=root.name, samples=samples, calls=calls).sort()
    estimated = estimate_ends(trace.calls, trace.end)
    trace.calls.sort(key=lambda c: (c.start, c.end))
    trace.meta = {"source_format": "dataset", "path": str(root), **info,
                  "ends_estimated": estimated, **results}
    if warnings:
        trace.meta["warnings"] = warnings
    return trace


def find_traces(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Trace directories named by ``paths``: a trace directory itself, or every trace
    directory below a folder (searched recursively, sorted, not descending into traces).
    A directory reached twice is listed once, where it was first met.

    Raises :class:`TraceError` for a path that does not exist or holds no trace.
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise TraceError(f"{path}: no such file or directory")
        if is_trace_dir(path):
            found.append(path)
            continue
        if not path.is_dir():
            raise TraceError(f"{path}: not a trace directory (expected a directory holding "
                             f"{RESOURCES} + {TOOL_CALLS}, or {OWN_META})")
        below: list[Path] = []
        for dirpath, dirnames, _ in os.walk(path, onerror=None):
            here = Path(dirpath)
            if here != path and is_trace_dir(here):
                below.append(here)
                dirnames[:] = []
                continue
            dirnames.sort()
        if not below:
            raise TraceError(f"{path}: no trace directories found (expected directories "
                             f"holding {RESOURCES} + {TOOL_CALLS}, or {OWN_META})")
        found.extend(sorted(below))
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in found:  # the same task named twice (or via two folders) is reported once
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique
