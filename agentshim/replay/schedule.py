"""What one tenant replays: the agent's own memory over time and its tool calls, each with the
memory profile it makes, in replay time (already divided by the speed-up, already scaled).

Standard library only: the tenant reads this inside its container. Built from a trace by
:mod:`agentshim.replay.convert`; stored as JSON (``schedule.json``) for the tenant.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Kinds of call: a tool call run through ``bash -c`` (its own process, managed by agentshim),
#: or one of the agent's built-in tools (Read, Edit, ...) whose memory is the agent's own.
BASH = "bash"
INTERNAL = "internal"


@dataclass
class Call:
    """One tool call: starts ``start`` s after the tenant's start and lasts ``duration`` s.

    ``profile`` is a step function of (offset s, bytes): from each offset on, the call holds
    that much memory above the agent's own; everything is freed at the end. ``cpu`` is the
    fraction of one core the call burns while holding.
    """

    index: int
    start: float
    duration: float
    kind: str = BASH
    profile: list[tuple[float, int]] = field(default_factory=list)
    cpu: float = 0.0
    label: str = "other"
    command: str = ""

    @property
    def end(self) -> float:
        """Nominal end (s from the tenant's start)."""
        return self.start + self.duration

    @property
    def peak_bytes(self) -> int:
        """The most memory the call holds at once."""
        return max((b for _, b in self.profile), default=0)

    def bytes_at(self, offset: float) -> int:
        """Memory the call holds ``offset`` s after its start (0 outside the call)."""
        if offset < 0 or offset >= self.duration or not self.profile:
            return 0
        i = bisect.bisect_right([o for o, _ in self.profile], offset) - 1
        return self.profile[i][1] if i >= 0 else 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"index": self.index, "start": round(self.start, 4),
                "duration": round(self.duration, 4), "kind": self.kind,
                "profile": [[round(o, 4), int(b)] for o, b in self.profile],
                "cpu": round(self.cpu, 3), "label": self.label, "command": self.command}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Call:
        """Inverse of to_json."""
        return cls(index=int(d["index"]), start=float(d["start"]),
                   duration=float(d["duration"]), kind=str(d.get("kind", BASH)),
                   profile=[(float(o), int(b)) for o, b in d.get("profile", [])],
                   cpu=float(d.get("cpu", 0.0)), label=str(d.get("label", "other")),
                   command=str(d.get("command", "")))


@dataclass
class Schedule:
    """One tenant's replay: ``duration`` s long; the agent holds ``framework`` (a step function
    of (offset s, bytes), at least ``baseline_bytes``) and runs ``calls`` in order."""

    name: str
    duration: float
    baseline_bytes: int
    framework: list[tuple[float, int]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    speed: float = 1.0
    mem_scale: float = 1.0
    source: str = ""

    def framework_at(self, t: float) -> int:
        """The agent's own memory at replay time t."""
        if not self.framework:
            return self.baseline_bytes
        i = bisect.bisect_right([o for o, _ in self.framework], t) - 1
        return self.framework[i][1] if i >= 0 else self.baseline_bytes

    def batches(self) -> list[list[Call]]:
        """Calls grouped so that calls overlapping in time run together (the agent waits for
        a whole group before it goes on); groups in start order."""
        out: list[list[Call]] = []
        end = float("-inf")
        for call in sorted(self.calls, key=lambda c: (c.start, c.index)):
            if out and call.start < end:
                out[-1].append(call)
                end = max(end, call.end)
            else:
                out.append([call])
                end = call.end
        return out

    def demand_at(self, t: float) -> int:
        """Memory the trace asks for at replay time t: the agent's plus its running calls'."""
        return self.framework_at(t) + sum(c.bytes_at(t - c.start) for c in self.calls)

    def breakpoints(self) -> list[float]:
        """Times at which demand_at can change, within [0, duration]."""
        pts = {0.0, self.duration}
        pts.update(o for o, _ in self.framework)
        for c in self.calls:
            pts.update((c.start, c.end))
            pts.update(c.start + o for o, _ in c.profile)
        return sorted(p for p in pts if 0.0 <= p <= self.duration)

    def demand_stats(self) -> tuple[int, float]:
        """(peak bytes, time-weighted average bytes) of demand_at over [0, duration]."""
        pts = self.breakpoints()
        if self.duration <= 0 or len(pts) < 2:
            value = self.demand_at(0.0)
            return value, float(value)
        peak, area = 0, 0.0
        for a, b in zip(pts, pts[1:], strict=False):
            if b <= a:
                continue
            value = self.demand_at((a + b) / 2)  # mid-segment: immune to rounding at the ends
            peak = max(peak, value)
            area += value * (b - a)
        return peak, area / self.duration

    @property
    def peak_bytes(self) -> int:
        """Highest demand."""
        return self.demand_stats()[0]

    @property
    def avg_bytes(self) -> float:
        """Time-weighted average demand."""
        return self.demand_stats()[1]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (what the tenant reads)."""
        return {"name": self.name, "duration": round(self.duration, 4),
                "baseline_bytes": int(self.baseline_bytes),
                "framework": [[round(o, 4), int(b)] for o, b in self.framework],
                "calls": [c.to_json() for c in self.calls], "speed": self.speed,
                "mem_scale": self.mem_scale, "source": self.source}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Schedule:
        """Inverse of to_json."""
        return cls(name=str(d["name"]), duration=float(d["duration"]),
                   baseline_bytes=int(d["baseline_bytes"]),
                   framework=[(float(o), int(b)) for o, b in d.get("framework", [])],
                   calls=[Call.from_json(c) for c in d.get("calls", [])],
                   speed=float(d.get("speed", 1.0)), mem_scale=float(d.get("mem_scale", 1.0)),
                   source=str(d.get("source", "")))

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")))

    @classmethod
    def load(cls, path: Path) -> Schedule:
        """Read a schedule.json."""
        return cls.from_json(json.loads(path.read_text()))
