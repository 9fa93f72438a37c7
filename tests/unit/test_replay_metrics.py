"""Replay metrics, policies' sizes and the output, on synthetic input."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from agentshim import policy as pol
from agentshim.cli import main
from agentshim.replay.metrics import (
    KILLED,
    MIB,
    POLICY_KEYS,
    TenantOutcome,
    percentile,
    policy_metrics,
    tenant_metrics,
    time_average,
)
from agentshim.replay.output import format_markdown, format_table
from agentshim.replay.policies import (
    POLICIES,
    TENANT_OVERHEAD,
    agentshim_policy,
    fixed_limit,
    policy_yaml,
    priority_of,
    static_limit,
)
from agentshim.replay.schedule import Call, Schedule


def log(calls: list[tuple[str, int]], done: bool, wall: float = 10.5) -> list[dict]:
    out = [{"event": "ready"}, {"event": "start", "t": 100.0}]
    out += [{"event": "call", "index": i, "kind": kind, "exit": code}
            for i, (kind, code) in enumerate(calls)]
    if done:
        out.append({"event": "done", "wall_s": wall, "lag_s": wall - 10})
    return out


def test_percentiles_and_time_average():
    assert percentile([], 50) is None
    assert percentile([4.0], 95) == 4.0
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile(list(range(101)), 95) == pytest.approx(95)
    assert time_average([(0, 10.0), (1, 30.0), (4, 0.0)]) == pytest.approx((10 + 90) / 4)
    assert time_average([(0, 5.0)]) == 5.0 and time_average([]) is None


def test_a_completed_tenant_and_its_kills():
    o = TenantOutcome(0, "a", "high", nominal_s=10.0, exit_code=0,
                      log=log([("bash", 0), ("bash", KILLED), ("internal", 0), ("bash", 2)],
                              done=True),
                      latencies_ms=[1.0, 2.0, 30.0], psi_stall_s=0.5,
                      records=[{"stall_us": 2_000_000, "frozen_s": 1.5,
                                "killed_by_agentshim": "frozen 10 s"}, {"stall_us": 0}])
    m = tenant_metrics(o)
    assert m["completed"] and not m["agent_died"]
    assert (m["tool_calls"], m["tool_calls_killed"], m["tool_calls_failed"]) == (3, 1, 1)
    assert m["throttled_s"] == 2.0  # the records' stall time beats the container's PSI
    assert m["frozen_s"] == 1.5 and m["killed_by_agentshim"] == 1
    assert m["completion_s"] == 10.5 and m["completion_ratio"] == 1.05
    assert m["alloc_latency_p50_ms"] == 2.0


def test_a_dead_agent_and_a_timed_out_one():
    dead = TenantOutcome(1, "b", "low", 10.0, exit_code=137, log=log([("bash", 0)], False))
    late = TenantOutcome(2, "c", "low", 10.0, exit_code=137, log=log([], False),
                         timed_out=True)
    md, ml = tenant_metrics(dead), tenant_metrics(late)
    assert md["agent_died"] and not md["completed"] and md["completion_s"] is None
    assert not ml["agent_died"] and ml["timed_out"]
    # an exit status 0 without "done" is not a completion either
    odd = TenantOutcome(3, "d", "low", 10.0, exit_code=0, log=log([], False))
    assert not tenant_metrics(odd)["completed"]


def test_frozen_time_from_events_when_records_lack_it():
    o = TenantOutcome(0, "a", "low", 10.0, exit_code=0, log=log([], True),
                      events=[{"action": "freeze"}, {"action": "thaw", "frozen_s": 2.25}])
    m = tenant_metrics(o)
    assert m["frozen_s"] == 2.25 and m["freezes"] == 1


def test_policy_row_has_the_issues_keys_and_adds_up():
    outs = [
        TenantOutcome(0, "a", "high", 10.0, 0, log([("bash", 0), ("bash", KILLED)], True, 10.2),
                      latencies_ms=[1.0] * 10),
        TenantOutcome(1, "b", "normal", 10.0, 137, log([("bash", KILLED)], False),
                      latencies_ms=[100.0]),
        TenantOutcome(2, "c", "low", 20.0, 0, log([("bash", 0)], True, 22.0)),
    ]
    series = [(0.0, 100 * MIB), (1.0, 300 * MIB), (2.0, 100 * MIB), (3.0, 100 * MIB)]
    m = policy_metrics(outs, series, host_bytes=400 * MIB, wall_s=22.5, reactive_kills=1)
    assert all(k in m for k in POLICY_KEYS)
    assert (m["tenants_completed"], m["agent_deaths"], m["tool_calls_killed"]) == (2, 1, 2)
    assert m["completion_s"] == pytest.approx(16.1)
    assert m["completion_ratio"] == pytest.approx((1.02 + 1.1) / 2, abs=1e-3)
    assert m["peak_mb"] == 300.0 and m["avg_mb"] == pytest.approx(500 / 3, abs=0.1)
    assert m["memory_efficiency"] == pytest.approx(500 / 3 / 400, abs=1e-3)
    assert m["alloc_latency_p50_ms"] == 1.0 and m["alloc_latency_p95_ms"] > 1.0
    assert m["reactive_kills"] == 1 and len(m["tenant_detail"]) == 3
    table = format_table({"config": {"tenants": 3, "host_mb": 400.0, "overcommit": 1.5,
                                     "speed": 1.0, "podman": False, "cgroups": "hybrid"},
                          "tenants": [], "policies": {"none": m, "static": m}})
    assert "tenants completed" in table and "2/3" in table and "static" in table
    assert format_markdown({"none": m}).startswith("| metric | none |")


def sched() -> Schedule:
    return Schedule("s", 10.0, 100 * MIB, framework=[(0.0, 100 * MIB), (5.0, 150 * MIB)],
                    calls=[Call(0, 1.0, 2.0, profile=[(0.0, 400 * MIB)])])


def test_static_sizes():
    s = sched()
    assert static_limit(s, "peak") == 500 * MIB + TENANT_OVERHEAD
    assert static_limit(s, "avg") == int(s.avg_bytes) + TENANT_OVERHEAD
    assert static_limit(s, "300M") == 300 * MIB
    assert static_limit(s, "share", host_bytes=900 * MIB, tenants=3) == 300 * MIB
    with pytest.raises(ValueError):
        static_limit(s, "lots")


def test_static_fixed_is_the_operators_size_scaled_with_the_traces():
    assert POLICIES.index("static") < POLICIES.index("static-fixed")
    assert fixed_limit("2G") == 2 << 30
    assert fixed_limit("2G", mem_scale=0.25) == 512 * MIB
    with pytest.raises(ValueError):
        fixed_limit("0")


def test_agentshim_policies_are_valid_and_prioritized():
    assert [priority_of(i) for i in range(5)] == ["high", "normal", "low", "normal", "low"]
    for i in range(3):
        p = pol.load_policy(policy_yaml(agentshim_policy(i, sched(), 2 << 30, 10.0)))
        assert p.priority == priority_of(i)
        assert p.memory.total == 2 << 30 and p.freeze_timeout == 10.0
        assert p.memory.framework_protect >= 150 * MIB
        assert p.on_pressure == ("throttle", "freeze", "kill_tool")


def test_cli_refuses_bad_options(tmp_path):
    r = CliRunner().invoke(main, ["replay", str(tmp_path), "--policy", "oomd"])
    assert r.exit_code == 2 and "unknown policy 'oomd'" in r.output
    r = CliRunner().invoke(main, ["replay", str(tmp_path), "--host-memory", "1G",
                                  "--overcommit", "2"])
    assert r.exit_code == 2 and "not both" in r.output
    r = CliRunner().invoke(main, ["replay", str(tmp_path), "--static-size", "huge"])
    assert r.exit_code == 2 and "bad size" in r.output
    r = CliRunner().invoke(main, ["replay", str(tmp_path), "--static-fixed-size", "0"])
    assert r.exit_code == 2 and "greater than 0" in r.output
    r = CliRunner().invoke(main, ["replay", str(tmp_path), "--retries", "-1"])
    assert r.exit_code == 2
