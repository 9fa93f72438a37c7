"""agentshim's own on-disk trace format (version 1), and format detection.

A trace is a directory::

    meta.json      {"format": "agentshim-trace", "version": 1, "name": NAME, "meta": {...}}
    samples.jsonl  one object a line: {"t": EPOCH_S, "mem_bytes": INT, "cpu_pct": FLOAT|null,
                   optional (live recorder): "mem_psi": PSI, "framework": SCOPE, "tools": SCOPE}
                   SCOPE = {"mem_bytes": INT|null, "cpu_pct": FLOAT|null, "mem_psi": PSI|null}
                   PSI = {"some_avg10", "full_avg10": FLOAT|null, "some_total_us",
                          "full_total_us": INT|null}
    calls.jsonl    one object a line: {"start": EPOCH_S, "end": EPOCH_S, "tool": STR,
                   "command": STR|null, "category": STR|null, "peak_bytes": INT|null,
                   "id": STR|null, "end_estimated": BOOL, "extra": {...}}
    events.jsonl   optional, one object a line: {"t": EPOCH_S, "type": STR, ...}

Readers ignore unknown keys (later minor additions) and refuse a newer ``version``.
docs/characterization.md describes the format in full.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from agentshim.trace.dataset import OWN_META, RESOURCES, TOOL_CALLS, is_dataset_dir, load_dataset
from agentshim.trace.model import SAMPLE_KEYS, Sample, ToolCall, Trace, TraceError

__all__ = ["CALLS", "EVENTS", "FORMAT", "SAMPLES", "SCOPES", "VERSION", "call_line", "dump_line",
           "load_trace", "meta_document", "read_trace", "sample_line", "trace_format",
           "write_meta", "write_trace"]

FORMAT: Final = "agentshim-trace"
VERSION: Final = 1
SAMPLES: Final = "samples.jsonl"
CALLS: Final = "calls.jsonl"
EVENTS: Final = "events.jsonl"
#: Sub-cgroups of a managed container whose own series a live sample may carry.
SCOPES: Final = ("framework", "tools")
_PSI_FLOATS: Final = ("some_avg10", "full_avg10")
_PSI_INTS: Final = ("some_total_us", "full_total_us")

_T = TypeVar("_T")


def _dump(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def dump_line(obj: Any) -> str:
    """One JSON line (compact, no NaN, newline-terminated) as the .jsonl files hold them."""
    return _dump(obj) + "\n"


def sample_line(sample: Sample) -> str:
    """The samples.jsonl line of ``sample`` (its ``extra`` keys after the core ones)."""
    obj: dict[str, Any] = {"t": sample.t, "mem_bytes": sample.mem_bytes,
                           "cpu_pct": sample.cpu_pct}
    obj.update((k, v) for k, v in sample.extra.items() if k not in SAMPLE_KEYS)
    return dump_line(obj)


def call_line(call: ToolCall) -> str:
    """The calls.jsonl line of ``call``."""
    return dump_line({"start": call.start, "end": call.end, "tool": call.tool,
                      "command": call.command, "category": call.category,
                      "peak_bytes": call.peak_bytes, "id": call.id,
                      "end_estimated": call.end_estimated, "extra": call.extra})


def meta_document(name: str, meta: dict[str, Any]) -> str:
    """The text of meta.json for a trace called ``name`` (``meta["path"]`` left out)."""
    # "path" is where a trace was read from, not part of it: read_trace sets it again
    kept = {k: v for k, v in meta.items() if k != "path"}
    doc = {"format": FORMAT, "version": VERSION, "name": name, "meta": kept}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def write_meta(root: Path, name: str, meta: dict[str, Any]) -> None:
    """Write ``root/meta.json`` atomically (the live recorder rewrites it as it goes)."""
    _write_atomic(root / OWN_META, meta_document(name, meta))


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_trace(trace: Trace, path: str | os.PathLike[str]) -> Path:
    """Write ``trace`` into directory ``path`` (created if needed) in format version 1.

    ``meta["path"]`` is not stored (reading sets it to the directory read). Raises ValueError
    if the trace holds non-finite numbers, TypeError for metadata JSON cannot hold.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    document = meta_document(trace.name, trace.meta)
    samples = "".join(sample_line(s) for s in trace.samples)
    calls = "".join(call_line(c) for c in trace.calls)
    events = "".join(dump_line(e) for e in trace.events)
    _write_atomic(root / SAMPLES, samples)
    _write_atomic(root / CALLS, calls)
    if trace.events:
        _write_atomic(root / EVENTS, events)
    else:
        (root / EVENTS).unlink(missing_ok=True)
    _write_atomic(root / OWN_META, document)
    return root


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceError(f"{path}: line {number}: malformed JSON: {exc.msg}") from None
                if not isinstance(obj, dict):
                    raise TraceError(f"{path}: line {number}: expected a JSON object")
                yield number, obj
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _num(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"'{key}' must be a finite number, got {value!r}")
    return float(value)


def _opt_num(obj: dict[str, Any], key: str) -> float | None:
    return None if obj.get(key) is None else _num(obj, key)


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"'{key}' must be a whole number >= 0, got {value!r}")
    return value


def _opt_int(obj: dict[str, Any], key: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key)


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string, got {value!r}")
    return value


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    return None if obj.get(key) is None else _str(obj, key)


def _parse(path: Path, build: Callable[[dict[str, Any]], _T]) -> list[_T]:
    out: list[_T] = []
    for number, obj in _lines(path):
        try:
            out.append(build(obj))
        except ValueError as exc:
            raise TraceError(f"{path}: line {number}: {exc}") from None
    return out


def _check_psi(obj: Any, where: str) -> None:
    if obj is None:
        return
    if not isinstance(obj, dict):
        raise ValueError(f"'{where}' must be an object or null")
    for key in _PSI_FLOATS:
        _opt_num(obj, key)
    for key in _PSI_INTS:
        _opt_int(obj, key)


def _check_scope(obj: Any, name: str) -> None:
    if obj is None:
        return
    if not isinstance(obj, dict):
        raise ValueError(f"'{name}' must be an object or null")
    try:
        _opt_int(obj, "mem_bytes")
        _opt_num(obj, "cpu_pct")
        _check_psi(obj.get("mem_psi"), "mem_psi")
    except ValueError as exc:
        raise ValueError(f"'{name}': {exc}") from None


def _sample(obj: dict[str, Any]) -> Sample:
    extra = {k: v for k, v in obj.items() if k not in SAMPLE_KEYS}
    _check_psi(extra.get("mem_psi"), "mem_psi")
    for scope in SCOPES:
        _check_scope(extra.get(scope), scope)
    return Sample(t=_num(obj, "t"), mem_bytes=_int(obj, "mem_bytes"),
                  cpu_pct=_opt_num(obj, "cpu_pct"), extra=extra)


def _call(obj: dict[str, Any]) -> ToolCall:
    start, end = _num(obj, "start"), _num(obj, "end")
    if end < start:
        raise ValueError("'end' is before 'start'")
    extra = obj.get("extra") or {}
    if not isinstance(extra, dict):
        raise ValueError("'extra' must be an object")
    return ToolCall(start=start, end=end, tool=_str(obj, "tool"),
                    command=_opt_str(obj, "command"), category=_opt_str(obj, "category"),
                    peak_bytes=_opt_int(obj, "peak_bytes"), id=_opt_str(obj, "id"),
                    end_estimated=bool(obj.get("end_estimated", False)), extra=extra)


def _event(obj: dict[str, Any]) -> dict[str, Any]:
    _num(obj, "t")
    _str(obj, "type")
    return obj


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a trace directory in agentshim's own format; TraceError names the bad file."""
    root = Path(path)
    meta_path = root / OWN_META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TraceError(f"{meta_path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{meta_path}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise TraceError(f"{meta_path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    except OSError as exc:
        raise TraceError(f"{meta_path}: cannot read: {exc.strerror or exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TraceError(f"{meta_path}: not an agentshim trace (expected \"format\": "
                         f"\"{FORMAT}\")")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TraceError(f"{meta_path}: bad \"version\" {version!r} (expected 1)")
    if version > VERSION:
        raise TraceError(f"{meta_path}: trace format version {version} is newer than this "
                         f"agentshim reads (up to {VERSION})")
    extra_meta = meta.get("meta") or {}
    if not isinstance(extra_meta, dict):
        raise TraceError(f"{meta_path}: \"meta\" must be an object")
    name = meta.get("name")
    trace = Trace(
        name=name if isinstance(name, str) and name else root.name,
        samples=_parse(root / SAMPLES, _sample),
        calls=_parse(root / CALLS, _call),
        meta=dict(extra_meta),
        events=_parse(root / EVENTS, _event) if (root / EVENTS).exists() else [],
    )
    trace.meta.setdefault("source_format", FORMAT)
    trace.meta["path"] = str(root)
    return trace.sort()


def trace_format(path: str | os.PathLike[str]) -> str | None:
    """``"agentshim-trace"``, ``"dataset"`` or None: which format directory ``path`` holds."""
    root = Path(path)
    if (root / OWN_META).is_file():
        return FORMAT
    if is_dataset_dir(root):
        return "dataset"
    return None


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a trace directory in whichever format it is (own format first, then dataset).

    Raises :class:`TraceError` naming the file for a missing or malformed trace.
    """
    root = Path(path)
    if not root.exists():
        raise TraceError(f"{root}: no such trace directory")
    if not root.is_dir():
        raise TraceError(f"{root}: not a directory (a trace is a directory)")
    kind = trace_format(root)
    if kind == FORMAT:
        return read_trace(root)
    if kind == "dataset":
        return load_dataset(root)
    raise TraceError(f"{root}: not a trace (expected {OWN_META}, or {RESOURCES} + "
                     f"{TOOL_CALLS})")
