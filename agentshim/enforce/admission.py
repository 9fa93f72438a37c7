"""Admission at call start: a call that would not fit waits before it runs.

`start` is the cheapest moment to act on memory pressure: the call has used no memory and done
no work, so holding it back costs only its wait, while a call that starts into a full scope is
later frozen or killed mid-burst, after it has done work that is then lost.

A call fits a scope (its container's total, the host) when the scope's usage plus the call's
expected need stays under ADMIT_MARK of the scope's limit. The expected need is the intent's
memory if the agent declared one, else the P90 peak of that category's recent calls on this
daemon, else the call's grant. Calls that do not fit wait in a room ordered by priority, then
arrival (FIFO); one waits at most the policy's admission_timeout, then runs anyway with a
notice. Nothing deadlocks: a nested call never reaches admission (the broker answers it
first), and a scope in which no call is running always admits its first waiter (the alone
rule), since then nothing else could free memory for it.

The decisions (`fits`, `PeakHistory.need`, `WaitingRoom.first_in_line`) are pure functions of
their inputs; the room holds the only state, behind one condition variable.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

ADMIT_MARK = 0.85  # a call is admitted while usage + need stays under this share of a limit
NEAR_MARK = 0.70  # ...and always while the scope's own usage is below this share: not near
HISTORY = 50  # peaks kept per category
MIN_SAMPLES = 3  # fewer peaks than this: the need is the grant
POLL_S = 0.1  # waiters re-read usage this often (memory frees without telling anyone)
PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


@dataclass(frozen=True)
class Room:
    """One scope's memory as read at call start: usage and limit in bytes, how many calls run
    in it now, and the bytes its just-admitted calls are still expected to take."""

    name: str
    usage: int
    limit: int
    running: int
    reserved: int = 0


def fits(room: Room, need: int, mark: float = ADMIT_MARK, near: float = NEAR_MARK) -> bool:
    """True when a call needing `need` bytes may start in `room` now: the scope is not near
    its limit, or the call fits under the mark beside what runs and what was just admitted."""
    if room.limit <= 0 or room.running == 0:
        return True  # unlimited, or alone: nothing else could free memory for it
    if room.usage < near * room.limit:
        return True  # not near its limit: the ladder handles what bursts from here
    return room.usage + room.reserved + need <= mark * room.limit


class PeakHistory:
    """Recent peaks per category (thread-safe), for the expected need of the next call."""

    def __init__(self, keep: int = HISTORY) -> None:
        self._peaks: dict[str, deque[int]] = {}
        self._keep = keep
        self._lock = threading.Lock()

    def add(self, category: str, peak: int) -> None:
        if peak <= 0:
            return
        with self._lock:
            self._peaks.setdefault(category, deque(maxlen=self._keep)).append(peak)

    def p90(self, category: str) -> int | None:
        """The 90th-percentile peak of the category, None with too few samples."""
        with self._lock:
            peaks = sorted(self._peaks.get(category, ()))
        if len(peaks) < MIN_SAMPLES:
            return None
        return peaks[min(len(peaks) - 1, int(0.9 * len(peaks)))]

    def need(self, category: str, grant: int, intent_memory: int | None) -> tuple[int, str]:
        """(expected bytes, where the figure comes from) of a call about to start."""
        if intent_memory:
            return min(intent_memory, grant), "intent"
        p = self.p90(category)
        if p is not None:
            return min(p, grant), f"P90 of recent {category} calls"
        return grant, "grant"


@dataclass(order=True)
class Waiter:
    """A call waiting at start; ordered by priority rank, then arrival."""

    rank: int
    arrived: float
    container: str = field(compare=False)
    host: str = field(compare=False, default="")


@dataclass
class Admitted:
    """How a call got in: waited seconds, and whether it ran on a timeout."""

    waited_s: float = 0.0
    timed_out: bool = False
    gave_up: bool = False  # the caller went away while waiting
    why: str = ""  # the scope that held it back


class WaitingRoom:
    """The calls waiting at start, across every container of one daemon."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[Waiter] = []
        #: admitted calls whose cgroup is not made yet: their need holds room until release()
        self._pending: dict[int, tuple[Waiter, int]] = {}

    def release(self, w: Waiter) -> None:
        """An admitted call is now running (or failed to start): its room is its usage."""
        with self._cond:
            self._pending.pop(id(w), None)
            self._cond.notify_all()

    def _blocked(self, rooms: list[Room], need: int,
                 shares: Callable[[Waiter], bool]) -> Room | None:
        """The first room the call does not fit, counting admitted calls that are not
        running yet as running, with their need used."""
        pending = [n for o, n in self._pending.values() if shares(o)]
        for r in rooms:
            seen = replace(r, reserved=r.reserved + sum(pending),
                           running=r.running + len(pending))
            if not fits(seen, need):
                return seen
        return None

    def _admitted(self, w: Waiter, need: int, a: Admitted) -> Admitted:
        self._pending[id(w)] = (w, need)
        return a

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def wake(self) -> None:
        """Memory may have been freed (a call ended): let waiters look again."""
        with self._cond:
            self._cond.notify_all()

    @staticmethod
    def first_in_line(w: Waiter, queue: list[Waiter], shares: Callable[[Waiter], bool]) -> bool:
        """True when no waiter ahead of w (by priority, then FIFO) shares a scope with it."""
        return not any(o < w and shares(o) for o in queue if o is not w)

    def admit(self, w: Waiter, rooms: Callable[[], list[Room]], need: int, timeout_s: float,
              shares: Callable[[Waiter], bool], gone: Callable[[], bool],
              on_wait: Callable[[float, str], None]) -> Admitted:
        """Block until the call fits every room (read afresh by rooms()), it is first in line
        among the waiters sharing a scope with it, the timeout passes, or gone() says the
        caller went away. on_wait(timeout_s, why) is called once, when the call must wait.
        Unless it gave up, the caller must release(w) once the call runs."""
        start = time.monotonic()
        if timeout_s <= 0:  # admission_timeout 0: admission is off for this container
            return Admitted()
        with self._cond:
            blocked = self._blocked(rooms(), need, shares)
            if blocked is None and self.first_in_line(w, self._waiting, shares):
                return self._admitted(w, need, Admitted())
            self._waiting.append(w)
        why = _why(blocked)
        on_wait(timeout_s, why)
        try:
            with self._cond:
                while True:
                    left = timeout_s - (time.monotonic() - start)
                    if left <= 0:
                        return self._admitted(w, need, Admitted(
                            time.monotonic() - start, timed_out=True, why=why))
                    self._cond.wait(min(POLL_S, left))
                    if gone():
                        return Admitted(time.monotonic() - start, gave_up=True, why=why)
                    blocked = self._blocked(rooms(), need, shares)
                    if blocked is None and self.first_in_line(w, self._waiting, shares):
                        return self._admitted(w, need, Admitted(time.monotonic() - start,
                                                                why=why))
        finally:
            with self._cond:
                self._waiting.remove(w)
                self._cond.notify_all()


def _why(room: Room | None) -> str:
    if room is None:
        return "a call of higher priority (or earlier) is waiting"
    pct = 100 * room.usage / room.limit if room.limit else 0
    return f"{room.name} at {pct:.0f}% of its limit"
