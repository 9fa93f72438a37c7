"""The machine-readable event log: one JSON line per action or memory event, per container
(format: docs/events.md)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
#: a JSON-lines file is rotated (to NAME.1, the one old file kept) before it passes this size
ROTATE_BYTES = 16 << 20

log = logging.getLogger("agentshimd")


class Appender:
    """Appends lines to JSON-lines files (event logs, call records), thread-safe: a file is
    rotated at `rotate_bytes`, and a line that cannot be written (the state directory is
    full, ...) is dropped and counted, never an error for the caller."""

    def __init__(self, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.rotate_bytes = rotate_bytes
        self.dropped = 0
        self.last_error = ""
        self._lock = threading.Lock()

    def append(self, path: Path, line: str) -> bool:
        """Append one line (with its newline); False when it was dropped (a partly written
        line is cut off again, so no torn line is left for the next one to join)."""
        data = memoryview(line.encode())
        with self._lock:
            size = 0
            try:
                size = path.stat().st_size
                if size and size + len(data) > self.rotate_bytes:
                    os.replace(path, path.with_name(path.name + ".1"))
                    size = 0
            except FileNotFoundError:
                pass
            except OSError as e:
                return self.drop(path, e)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                return self.drop(path, e)
            try:
                while data:
                    data = data[os.write(fd, data):]
                return True
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                return self.drop(path, e)
            finally:
                os.close(fd)

    def drop(self, path: Path, e: OSError) -> bool:
        """Count what could not be written to path (logged at the first and every 1000th)."""
        self.dropped += 1
        self.last_error = f"{path.name}: {e.strerror or e}"
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("dropped %d log line(s): %s", self.dropped, self.last_error)
        return False


class EventLog:
    """Appends events to <state>/events/<container>.jsonl (thread-safe), through `appender`
    (which the call records share)."""

    def __init__(self, state_dir: Path, appender: Appender | None = None) -> None:
        self.dir = state_dir / "events"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appender = appender or Appender()

    def path(self, container: str) -> Path:
        """The log file of one container."""
        return self.dir / f"{container}.jsonl"

    def write(self, container: str, action: str, call: int | None = None,
              source: str = "poll", ts: float | None = None, **extra: Any) -> dict[str, Any]:
        """Append one event and return it."""
        ev: dict[str, Any] = {"v": FORMAT_VERSION, "ts": round(ts or time.time(), 6),
                              "container": container, "call": call, "action": action,
                              "source": source}
        ev.update(extra)
        self.appender.append(self.path(container),
                             json.dumps(ev, separators=(",", ":")) + "\n")
        return ev


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every well-formed JSON object line of a JSON-lines file (event logs, call records): a
    torn line is skipped, a missing or unreadable file gives []."""
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out
