"""agentshimd's per-container files as trace data: its call records become :class:`ToolCall`s,
its event lines become trace events, and :class:`JsonlTail` follows either file as it grows.

Files (docs/daemon.md, docs/events.md): ``<state>/calls/<id>.jsonl`` (one record per finished
call) and ``<state>/events/<id>.jsonl`` (one line per action or memory event, version 1).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Final

from agentshim.trace.model import ToolCall

__all__ = ["JsonlTail", "call_from_record", "event_from_line"]

#: Keys of a call record that become ToolCall fields (the rest goes to ``extra`` as is).
_RECORD_FIELDS: Final = ("container", "call", "command", "category", "start", "duration_s",
                         "peak_bytes")
#: Keys of an event line that are renamed or dropped in a trace event.
_EVENT_DROPPED: Final = ("v", "ts", "action", "container")
#: A tail reads at most this much per poll, so a huge backlog never stalls the sampler long.
MAX_READ_BYTES: Final = 4 << 20


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def call_from_record(rec: dict[str, Any]) -> ToolCall | None:
    """A ToolCall from one agentshimd call record; None when the record lacks a start time.

    ``start`` is the record's start, ``end`` start + ``duration_s``, ``tool`` is ``Bash``
    (agentshimd sees shell tool calls), ``id`` the call's sequence number, ``peak_bytes`` the
    call cgroup's own peak; every other key (exit, end reason, grant, CPU, throttle/OOM counts,
    ...) is kept in ``extra`` under its record name.
    """
    start = _finite(rec.get("start"))
    if start is None:
        return None
    duration = _finite(rec.get("duration_s"))
    duration = max(0.0, duration) if duration is not None else 0.0
    peak = rec.get("peak_bytes")
    peak = peak if isinstance(peak, int) and not isinstance(peak, bool) and peak >= 0 else None
    command = rec.get("command")
    category = rec.get("category")
    seq = rec.get("call")
    return ToolCall(
        start=start, end=start + duration, tool="Bash",
        command=command if isinstance(command, str) else None,
        category=category if isinstance(category, str) and category else None,
        peak_bytes=peak, id=None if seq is None else str(seq),
        extra={k: v for k, v in rec.items() if k not in _RECORD_FIELDS})


def event_from_line(line: dict[str, Any]) -> dict[str, Any] | None:
    """A trace event (``t``, ``type``, then the line's other keys) from one agentshimd event
    line (``ts``, ``action``, ...); None when it has no usable time or action."""
    ts = _finite(line.get("ts"))
    action = line.get("action")
    if ts is None or not isinstance(action, str) or not action:
        return None
    out: dict[str, Any] = {"t": ts, "type": action}
    out.update((k, v) for k, v in line.items() if k not in _EVENT_DROPPED and k not in out)
    return out


class JsonlTail:
    """Follows a JSON-lines file that is appended to, like ``tail -n0 -F``.

    With ``from_end`` the lines already in the file when the tail is made are skipped (only
    what is written afterwards is returned); a file that does not exist yet is read from its
    first line once it appears. A file replaced (new inode) or truncated is read again from the
    start. A last line without its newline waits for the rest. Lines that are not JSON objects
    are counted in ``bad_lines`` and skipped.
    """

    def __init__(self, path: Path, from_end: bool = True) -> None:
        self.path = path
        self.bad_lines = 0
        self._fd: int | None = None
        self._ino: int | None = None
        self._offset = 0
        self._partial = b""
        if from_end:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                self._ino, self._offset = st.st_ino, st.st_size

    @property
    def exists(self) -> bool:
        """True once the file has been seen."""
        return self._ino is not None

    def _reopen(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return self._fd is not None  # gone for now: keep reading what we hold
        if self._fd is not None and st.st_ino == self._ino:
            return True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        if st.st_ino != self._ino:  # a new file (or one that appeared): from its start
            self._offset, self._partial = 0, b""
        self._ino = st.st_ino
        return True

    def poll(self) -> list[dict[str, Any]]:
        """The complete lines written since the last poll, parsed."""
        if not self._reopen() or self._fd is None:
            return []
        size = os.fstat(self._fd).st_size
        if size < self._offset:  # truncated
            self._offset, self._partial = 0, b""
        if size == self._offset:
            return []
        data = os.pread(self._fd, min(size - self._offset, MAX_READ_BYTES), self._offset)
        self._offset += len(data)
        chunk = self._partial + data
        *lines, self._partial = chunk.split(b"\n")
        out: list[dict[str, Any]] = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                self.bad_lines += 1
                continue
            if isinstance(obj, dict):
                out.append(obj)
            else:
                self.bad_lines += 1
        return out

    def close(self) -> None:
        """Release the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

