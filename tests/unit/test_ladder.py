"""The ladder's decisions on hand-made readings (no cgroups)."""

from __future__ import annotations

from agentshim.enforce.ladder import CallView, Ladder, ScopeView, Thresholds
from agentshim.units import MIB


def call(seq: int, usage_mb: int, prio: str = "normal", grant_mb: int = 512, ctr: str = "c",
         frozen_since: float | None = None, at_budget_since: float | None = None,
         timeout: float = 30.0, **kw) -> CallView:
    return CallView(container=ctr, seq=seq, priority=prio, usage=usage_mb * MIB,
                    grant=grant_mb * MIB, freeze_timeout=timeout, frozen_since=frozen_since,
                    at_budget_since=at_budget_since, **kw)


def scope(usage_mb: int, calls: list[CallView], limit_mb: int = 1000,
          kind: str = "container") -> ScopeView:
    return ScopeView(f"{kind}:x", kind, usage_mb * MIB, limit_mb * MIB, calls)  # type: ignore[arg-type]


def kinds(actions) -> list[tuple[str, int]]:
    return [(a.kind, a.seq) for a in actions]


def test_levels():
    t = Thresholds()
    assert t.level(899, 1000) == "ok"
    assert t.level(900, 1000) == "near"
    assert t.level(970, 1000) == "over"
    assert t.level(5, 0) == "ok"


def test_below_the_mark_nothing_happens():
    lad = Ladder()
    level, acts = lad.scope_actions(scope(500, [call(1, 400)]), now=0.0)
    assert level == "ok" and acts == []


def test_crossing_the_mark_freezes_the_largest_overshoot_of_one_priority():
    lad = Ladder()
    calls = [call(1, 300, grant_mb=512), call(2, 560, grant_mb=512), call(3, 20, grant_mb=64)]
    level, acts = lad.scope_actions(scope(920, calls), now=0.0)
    assert level == "near" and kinds(acts) == [("freeze", 2)]
    assert "container at 92%" in acts[0].reason


def test_lower_priorities_are_frozen_while_the_top_one_runs():
    lad = Ladder()
    calls = [call(1, 300, "high"), call(2, 200, "low"), call(3, 250, "normal", ctr="d")]
    _, acts = lad.scope_actions(scope(930, calls, kind="host"), now=0.0)
    assert sorted(kinds(acts)) == [("freeze", 2), ("freeze", 3)]
    assert kinds(acts)[0] == ("freeze", 2)  # lowest first


def test_no_further_freeze_unless_usage_keeps_growing():
    lad = Ladder()
    calls = [call(1, 500), call(2, 400)]
    _, first = lad.scope_actions(scope(920, calls), now=0.0)
    assert kinds(first) == [("freeze", 1)]
    calls[0].frozen_since = 0.0
    _, again = lad.scope_actions(scope(921, calls), now=0.1)  # flat: leave call 2 alone
    assert again == []
    _, grown = lad.scope_actions(scope(935, calls), now=0.2)  # still growing: next one
    assert kinds(grown) == [("freeze", 2)]


def test_over_the_mark_a_frozen_lower_priority_call_makes_room():
    lad = Ladder()
    calls = [call(1, 300, "high"), call(2, 400, "low", frozen_since=0.0)]
    lad.scope_actions(scope(920, calls, kind="host"), now=0.0)
    _, acts = lad.scope_actions(scope(975, calls, kind="host"), now=0.1)
    assert kinds(acts) == [("kill", 2)] and "higher-priority" in acts[0].reason


def test_near_with_lower_ones_already_frozen_the_top_call_keeps_running():
    lad = Ladder()
    calls = [call(1, 300, "high"), call(2, 400, "low", frozen_since=0.0)]
    lad.scope_actions(scope(900, calls, kind="host"), now=0.0)
    _, acts = lad.scope_actions(scope(940, calls, kind="host"), now=0.1)
    assert acts == []


def test_thaw_below_the_thaw_mark_highest_priority_first_one_at_a_time():
    lad = Ladder()
    calls = [call(1, 100, "low", frozen_since=1.0), call(2, 100, "normal", frozen_since=2.0)]
    _, acts = lad.scope_actions(scope(900, calls), now=3.0)
    _, acts = lad.scope_actions(scope(860, calls), now=3.1)  # ok but above the thaw mark
    assert acts == []
    _, acts = lad.scope_actions(scope(700, calls), now=3.2)
    assert kinds(acts) == [("thaw", 2)]


def test_a_call_frozen_for_its_own_budget_is_not_thawed_by_scope_relief():
    lad = Ladder()
    calls = [call(1, 100, frozen_since=1.0, frozen_for_budget=True)]
    _, acts = lad.scope_actions(scope(100, calls), now=2.0)
    assert acts == []


def test_held_at_budget_past_the_grace_is_frozen_then_killed_past_the_timeout():
    lad = Ladder(Thresholds(stall_grace_s=1.0))
    c = call(1, 64, grant_mb=64, at_budget_since=10.0, timeout=5.0)
    assert lad.budget_actions([c], now=10.5) == []
    acts = lad.budget_actions([c], now=11.0)
    assert kinds(acts) == [("freeze", 1)] and acts[0].for_budget
    assert "64M budget" in acts[0].reason
    c.frozen_since, c.frozen_for_budget = 11.0, True
    assert lad.budget_actions([c], now=15.9) == []
    acts = lad.budget_actions([c], now=16.0)
    assert kinds(acts) == [("kill", 1)] and "over its memory budget" in acts[0].reason


def test_policy_without_freeze_waits_then_kills_and_without_kill_never_kills():
    lad = Ladder()
    no_freeze = call(1, 64, grant_mb=64, at_budget_since=0.0, timeout=3.0, can_freeze=False)
    assert lad.budget_actions([no_freeze], now=2.0) == []
    assert kinds(lad.budget_actions([no_freeze], now=3.0)) == [("kill", 1)]
    no_kill = call(2, 64, grant_mb=64, frozen_since=0.0, timeout=3.0, can_kill=False)
    assert lad.budget_actions([no_kill], now=100.0) == []


def test_calls_that_cannot_be_frozen_are_skipped_for_the_next():
    lad = Ladder()
    calls = [call(1, 600, can_freeze=False), call(2, 300)]
    _, acts = lad.scope_actions(scope(950, calls), now=0.0)
    assert kinds(acts) == [("freeze", 2)]


def test_a_frozen_call_is_killed_when_pressure_does_not_pass():
    """Frozen memory is not freed: after a third of freeze_timeout (here 10 s) with the scope
    still short, the lowest-priority frozen call goes; one kill per settle period."""
    lad = Ladder()
    calls = [call(1, 300, "normal", frozen_since=0.0), call(2, 200, "low", frozen_since=1.0),
             call(3, 100, "high")]
    lad.scope_actions(scope(920, calls, kind="host"), now=0.0)
    _, acts = lad.scope_actions(scope(920, calls, kind="host"), now=9.9)
    assert acts == []  # nobody frozen 10 s yet
    _, acts = lad.scope_actions(scope(920, calls, kind="host"), now=10.5)
    assert kinds(acts) == [("kill", 1)]  # the only one due (the low one has 9.5 s)
    assert acts[0].reason == ("frozen 10.5s and the host is still at 92% of its 1000M: "
                              "a frozen call keeps its memory")
    calls[0].frozen_since = None  # gone
    _, acts = lad.scope_actions(scope(880, calls, kind="host"), now=11.2)  # between thaw/near
    assert acts == []  # settling after the last kill
    _, acts = lad.scope_actions(scope(880, calls, kind="host"), now=11.6)
    assert kinds(acts) == [("kill", 2)]
    _, acts = lad.scope_actions(scope(800, calls, kind="host"), now=13.0)
    assert kinds(acts) == [("thaw", 2)]  # (still listed as frozen here) pressure passed


def test_over_the_mark_a_frozen_call_of_the_same_priority_is_killed_first():
    lad = Ladder()
    calls = [call(1, 500, frozen_since=0.0), call(2, 300)]
    lad.scope_actions(scope(920, calls), now=0.0)
    _, acts = lad.scope_actions(scope(975, calls), now=0.2)
    assert kinds(acts) == [("kill", 1)] and "OOM killer" in acts[0].reason


def test_the_victim_is_the_call_whose_loss_costs_least_per_byte_freed():
    from dataclasses import replace

    from agentshim.enforce.ladder import order_victims

    old = replace(call(1, 400, frozen_since=0.0), cpu_s=120.0)  # 2 min of work in 400M
    young = replace(call(2, 300, frozen_since=0.0), cpu_s=3.0)
    low = replace(call(3, 100, prio="low", frozen_since=0.0), cpu_s=500.0)
    assert [c.seq for c in order_victims([old, young, low])] == [3, 2, 1]
    # equal work per byte: the youngest goes
    a, b = replace(young, seq=4, cpu_s=0.0), replace(young, seq=5, cpu_s=0.0)
    assert [c.seq for c in order_victims([a, b])] == [5, 4]
    lad = Ladder()
    calls = [old, young, call(6, 100)]
    lad.scope_actions(scope(920, calls), now=0.0)
    _, acts = lad.scope_actions(scope(975, calls), now=0.2)
    assert kinds(acts) == [("kill", 2)] and "least work lost per byte" in acts[0].reason
