"""The in-memory model of one agent task's resource trace.

Produced by the dataset importer (:mod:`agentshim.trace.dataset`), by the project's own on-disk
format (:mod:`agentshim.trace.format`) and by the live recorder
(:mod:`agentshim.trace.recorder`). Times are epoch seconds (floats, UTC), memory is bytes, CPU
is percent of one core (as podman prints it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class TraceError(ValueError):
    """A trace could not be read; the message names the file and what is wrong with it."""


#: Keys of a sample line that are :class:`Sample` fields; any other key goes to ``extra``.
SAMPLE_KEYS = ("t", "mem_bytes", "cpu_pct")


@dataclass
class Sample:
    """One resource sample of the whole container at epoch time ``t``.

    ``extra`` holds whatever else the source measured at that time, kept as read: the live
    recorder puts the container's memory PSI (``mem_psi``) and the ``framework`` and ``tools``
    sub-cgroups' own series there (docs/characterization.md, "Live traces").
    """

    t: float
    mem_bytes: int
    cpu_pct: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolCall:
    """One tool call of the agent between ``start`` and ``end`` (epoch seconds).

    ``command`` is the shell command line of Bash-like calls (None for other tools),
    ``category`` its class (test, install, build, python, git, file_ops, other) when known,
    ``peak_bytes`` the call's own peak memory when a recorder measured it (its cgroup's
    memory.peak), ``end_estimated`` True when the source had no end time and the importer
    estimated it.
    """

    start: float
    end: float
    tool: str
    command: str | None = None
    category: str | None = None
    peak_bytes: int | None = None
    id: str | None = None
    end_estimated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds between start and end (never negative)."""
        return max(0.0, self.end - self.start)


@dataclass
class Trace:
    """A task's samples (sorted by time), tool calls (sorted by start), metadata and events."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def sort(self) -> Trace:
        """Sort samples by time and calls by start (in place); returns self."""
        self.samples.sort(key=lambda s: s.t)
        self.calls.sort(key=lambda c: (c.start, c.end))
        return self

    @property
    def start(self) -> float | None:
        """Time of the first sample (or first call when there are no samples)."""
        if self.samples:
            return self.samples[0].t
        return min((c.start for c in self.calls), default=None)

    @property
    def end(self) -> float | None:
        """Time of the last sample (or last call end when there are no samples)."""
        if self.samples:
            return self.samples[-1].t
        return max((c.end for c in self.calls), default=None)


def check_finite(value: float, what: str) -> float:
    """``value`` as a float, or ValueError naming ``what`` when it is NaN or infinite."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is not a finite number ({value!r})")
    return number
