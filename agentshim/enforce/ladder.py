"""The policy ladder's decisions, as pure functions of what agentshimd reads (no I/O here).

Two kinds of trouble, each with its steps (docs/enforcement.md):

* a call over its own budget: the kernel throttles it at memory.high (step "throttle");
  still pushing after ``stall_grace_s``, it is frozen ("freeze"); frozen longer than the
  policy's freeze_timeout, it is killed ("kill_tool"), only that call.
* a scope near its memory (a container near its total, or the host, i.e. the containers'
  parent cgroup with a limit, or the machine): while it grows, running calls are frozen,
  lowest priority and largest overshoot first; calls of the highest priority present keep
  running while lower ones can be frozen. Past the "over" mark, a frozen call (lower
  priorities first) is killed to make room; a frozen call keeps its memory, so one frozen for
  a third of its freeze_timeout while the scope stays short is killed too. When usage falls
  below the thaw mark, frozen calls are thawed one per step, highest priority first.

The agent framework is never a candidate: only tool calls appear in these views.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from agentshim.units import format_duration, format_size

PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2}
Level = Literal["ok", "near", "over"]


@dataclass(frozen=True)
class Thresholds:
    """Fractions of a scope's limit: freeze at ``near`` while growing, kill lower-priority
    frozen calls at ``over``, thaw below ``thaw``."""

    near: float = 0.90
    over: float = 0.97
    thaw: float = 0.85
    #: growth (bytes) within ``growth_window_s`` that counts as "still growing"
    growth_bytes: int = 8 << 20
    growth_window_s: float = 0.5
    #: how long a call may sit at its own budget before it is frozen
    stall_grace_s: float = 1.0
    #: a call frozen for scope pressure that has not passed is killed after this share of its
    #: freeze_timeout (at least min_hold_s): frozen memory is not freed memory
    hold_fraction: float = 1 / 3
    min_hold_s: float = 2.0
    #: after such a kill, wait this long for usage to settle before the next one
    settle_s: float = 1.0

    def level(self, usage: int, limit: int) -> Level:
        """ok / near / over for usage against limit."""
        if limit <= 0:
            return "ok"
        r = usage / limit
        return "over" if r >= self.over else "near" if r >= self.near else "ok"


@dataclass
class CallView:
    """One running tool call as the ladder sees it."""

    container: str
    seq: int
    priority: str
    usage: int
    grant: int
    freeze_timeout: float
    can_freeze: bool = True
    can_kill: bool = True
    frozen_since: float | None = None  # monotonic seconds
    #: since when the call has been held at its own budget (throttled / waiting), if it is
    at_budget_since: float | None = None
    frozen_for_budget: bool = False
    cpu_s: float = 0.0  # CPU time the call has done (read for frozen calls: kill candidates)

    @property
    def key(self) -> tuple[str, int]:
        return (self.container, self.seq)

    @property
    def rank(self) -> int:
        return PRIORITY_RANK.get(self.priority, 1)

    @property
    def overshoot(self) -> int:
        return self.usage - self.grant


@dataclass
class ScopeView:
    """A container, or the host its containers share: usage against a limit, and its calls."""

    name: str
    kind: Literal["container", "host"]
    usage: int
    limit: int
    calls: list[CallView]


@dataclass(frozen=True)
class Action:
    """What the enforcer is to do to one call."""

    kind: Literal["freeze", "thaw", "kill"]
    container: str
    seq: int
    reason: str
    scope: str = ""
    for_budget: bool = False


@dataclass
class ScopeState:
    """What the ladder remembers about a scope between evaluations."""

    level: Level = "ok"
    last_kill: float = float("-inf")
    history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=256))

    def growing(self, now: float, usage: int, t: Thresholds, entered: bool) -> bool:
        """True when the scope just crossed into near/over or grew by growth_bytes lately."""
        while self.history and now - self.history[0][0] > t.growth_window_s:
            self.history.popleft()
        low = min((u for _, u in self.history), default=usage)
        self.history.append((now, usage))
        return entered or usage - low >= t.growth_bytes


def _pct(usage: int, limit: int) -> str:
    return f"{100 * usage / limit:.0f}%" if limit > 0 else "?"


def order_victims(calls: list[CallView]) -> list[CallView]:
    """Whom to kill first: the call whose loss costs least per byte freed. Lowest priority,
    then the least CPU time done per byte it holds (the work an agent must redo), then the
    youngest."""
    return sorted(calls, key=lambda c: (c.rank, c.cpu_s / max(c.usage, 1), -c.seq))


def _victim_reason(v: CallView) -> str:
    return (f"the least work lost per byte freed ({v.cpu_s:.1f} s of CPU done, "
            f"{v.usage >> 20} MiB held)")


def _order_to_freeze(calls: list[CallView]) -> list[CallView]:
    """Lowest priority first, then the largest overshoot, then the largest."""
    return sorted(calls, key=lambda c: (c.rank, -c.overshoot, -c.usage, c.seq))


class Ladder:
    """Decides freeze/thaw/kill actions; keeps per-scope hysteresis state."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.t = thresholds or Thresholds()
        self.scopes: dict[str, ScopeState] = {}

    def forget(self, scope: str) -> None:
        """Drop the state of a scope that went away."""
        self.scopes.pop(scope, None)

    # --- per call ------------------------------------------------------------------------
    def budget_actions(self, calls: list[CallView], now: float) -> list[Action]:
        """Freeze calls held at their own budget for stall_grace_s; kill frozen calls past
        their freeze_timeout."""
        out: list[Action] = []
        for c in calls:
            if c.frozen_since is not None:
                waited = now - c.frozen_since
                if c.can_kill and waited >= c.freeze_timeout:
                    why = ("it stayed over its memory budget" if c.frozen_for_budget
                           else "memory stayed short")
                    out.append(Action("kill", c.container, c.seq,
                                      f"frozen {format_duration(waited)} and {why}"))
                continue
            if c.at_budget_since is None or now - c.at_budget_since < self.t.stall_grace_s:
                continue
            waited = now - c.at_budget_since
            if c.can_freeze:
                out.append(Action("freeze", c.container, c.seq,
                                  f"held at its {format_size(c.grant)} budget for "
                                  f"{format_duration(waited)}", for_budget=True))
            elif c.can_kill and waited >= c.freeze_timeout:
                out.append(Action("kill", c.container, c.seq,
                                  f"waited {format_duration(waited)} at its "
                                  f"{format_size(c.grant)} memory budget"))
        return out

    # --- per scope -----------------------------------------------------------------------
    def scope_actions(self, scope: ScopeView, now: float) -> tuple[Level, list[Action]]:
        """The scope's level and what to do about it."""
        st = self.scopes.setdefault(scope.name, ScopeState())
        level = self.t.level(scope.usage, scope.limit)
        entered = level != "ok" and st.level == "ok"
        growing = st.growing(now, scope.usage, self.t, entered)
        st.level = level
        where = (f"{scope.kind} at {_pct(scope.usage, scope.limit)} of its "
                 f"{format_size(scope.limit)}")
        running = [c for c in scope.calls if c.frozen_since is None]
        frozen = [c for c in scope.calls if c.frozen_since is not None]
        out: list[Action] = []
        if level == "ok" and scope.usage < self.t.thaw * scope.limit:
            back = [c for c in frozen if not c.frozen_for_budget]
            back.sort(key=lambda c: (-c.rank, c.frozen_since or 0.0, c.seq))
            if back:
                out.append(Action("thaw", back[0].container, back[0].seq,
                                  f"{where}: pressure passed", scope.name))
            return level, out
        held = self._held_too_long(scope, st, now, where, frozen)
        if held or level == "ok":
            return level, held
        if not growing or not running:
            return level, out
        out = self._escalate(scope, level, where, running, frozen)
        if out:  # growth is measured again from here: one step per bout of growth
            st.history.clear()
            st.history.append((now, scope.usage))
        return level, out

    def _held_too_long(self, scope: ScopeView, st: ScopeState, now: float, where: str,
                       frozen: list[CallView]) -> list[Action]:
        """A frozen call keeps its memory: when pressure has not passed after
        hold_fraction * freeze_timeout (at least min_hold_s), the lowest-priority, largest
        frozen call is killed so the others can go on (one kill per settle_s)."""
        if now - st.last_kill < self.t.settle_s:
            return []
        due = [c for c in frozen if c.can_kill and not c.frozen_for_budget
               and c.frozen_since is not None and now - c.frozen_since
               >= max(self.t.min_hold_s, self.t.hold_fraction * c.freeze_timeout)]
        if not due:
            return []
        v = sorted(due, key=lambda c: (c.rank, -c.usage, c.seq))[0]
        st.last_kill = now
        held = format_duration(now - v.frozen_since if v.frozen_since is not None else 0.0)
        return [Action("kill", v.container, v.seq,
                       f"frozen {held} and the {where.replace(' at ', ' is still at ', 1)}: "
                       "a frozen call keeps its memory", scope.name)]

    @staticmethod
    def _escalate(scope: ScopeView, level: Level, where: str, running: list[CallView],
                  frozen: list[CallView]) -> list[Action]:
        out: list[Action] = []
        top = max(c.rank for c in running)
        lower = [c for c in running if c.rank < top and c.can_freeze]
        if lower:
            for c in _order_to_freeze(lower):
                out.append(Action("freeze", c.container, c.seq,
                                  f"{where}; a higher-priority call is running", scope.name))
            return out
        frozen_lower = [c for c in frozen if c.rank < top]
        if level == "over" and frozen:
            # close to the kernel's OOM killer: make room by killing a frozen call (lower
            # priorities first) rather than freezing yet another one
            victims = order_victims([c for c in (frozen_lower or frozen) if c.can_kill])
            if victims:
                v = victims[0]
                why = ("made room for a higher-priority call" if frozen_lower
                       else "made room before the kernel's OOM killer would")
                out.append(Action("kill", v.container, v.seq,
                                  f"{where}: {why}; chosen for {_victim_reason(v)}",
                                  scope.name))
                return out
        if frozen_lower:
            return out
        candidates = [c for c in running if c.can_freeze]
        if candidates:
            c = _order_to_freeze(candidates)[0]
            out.append(Action("freeze", c.container, c.seq, f"{where} and growing", scope.name))
        return out
