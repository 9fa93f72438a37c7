"""The machine-readable event log: one JSON line per action or memory event, per container
(format: docs/events.md)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


class EventLog:
    """Appends events to <state>/events/<container>.jsonl (thread-safe)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "events"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

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
        line = json.dumps(ev, separators=(",", ":")) + "\n"
        with self._lock, self.path(container).open("a") as f:
            f.write(line)
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
