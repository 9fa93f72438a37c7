"""The enforcement ladder for real: a private agentshimd, real cgroups standing in for
containers (podman e2e of the same is in test_ladder_podman.py), real processes allocating.

These run on the hybrid host (v1 memory + freezer) here and, through tests/v2/test_ladder_v2.py,
on pure cgroup v2 in the VM. They test what the ladder does to calls that are running, so the
policies of tests that start a call into a scope near its limit turn admission off
(admission_timeout: 0s); tests/host/test_admission.py tests admission itself.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from agentshim.cgroups import Cgroup, MemoryLimits
from agentshim.protocol import request
from agentshim.units import MIB
from tests.daemon_support import end_call, register, start_call, start_daemon, wait_for


@pytest.fixture
def daemon(tmp_path, layout):
    # the ladder as such: a frozen call keeps its memory (offloading it to swap, which
    # test_offload.py tests, would let the ladder thaw it at once on a host with swap)
    d = start_daemon(tmp_path, bpf=False, extra_env={"AGENTSHIM_OFFLOAD": "0"})
    yield d
    assert d.stop() == 0, d.log.read_text()


@pytest.fixture
def host(scratch, request):
    """A parent cgroup with a memory limit: the "host" two containers share."""
    scratch.set_memory(MemoryLimits(max=getattr(request, "param", 700) * MIB))
    if scratch.layout.mode == "v2":
        scratch.enable_controllers()
    return scratch


def sleeper(cg: Cgroup) -> subprocess.Popen:
    """The agent framework stand-in: a process in framework/ that must survive."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            preexec_fn=lambda: cg.move(__import__("os").getpid()))


def two_tenants_gone(daemon, calls, trees) -> None:
    """Stop the calls, unregister the "low" and "high" tenants, remove their trees."""
    for c in calls:
        if c is not None:
            c.stop()
    for cid in ("low", "high"):
        request(daemon.ctl, {"op": "unregister", "id": cid})
    for t in trees:
        t.destroy()


def actions(daemon, cid: str) -> list[tuple[str, int | None]]:
    return [(e["action"], e["call"]) for e in daemon.events(cid)
            if e["action"] in ("freeze", "thaw", "kill")]


def test_call_over_its_budget_is_throttled_frozen_then_killed_alone(daemon, scratch):
    tree, sock = register(daemon, scratch, "c1",
                          "memory: {total: 1G, tool_default: 64M}\nfreeze_timeout: 2s\n")
    agent = sleeper(tree.framework)
    try:
        call = start_call(sock, tree.framework, "python make_big_list.py", mb=240, step_mb=8)
        assert call.reply["grant"] == 64 * MIB
        call.proc.wait(timeout=30)  # killed by the ladder
        assert call.proc.returncode == -9
        end = end_call(sock, tree.framework, call.seq, 137)
        rec = daemon.records("c1")[-1]
        assert rec["call"] == call.seq
        assert rec["throttle_events"] > 0  # held at its budget first (v2 high, v1 failcnt)
        assert rec["freezes"] >= 1 and rec["frozen_s"] >= 1.5
        assert "frozen" in rec["killed_by_agentshim"]
        assert "was killed" in end["notice"] and "hint" in end["notice"]
        acts = [a for a, _ in actions(daemon, "c1")]
        assert acts[:1] == ["freeze"] and "kill" in acts
        kinds = [e["action"] for e in daemon.events("c1")]
        assert kinds.index("call_start") < kinds.index("freeze") < kinds.index("kill")
        assert agent.poll() is None, "the framework must survive"
        assert tree.framework.procs() == [agent.pid]
        wait_for(lambda: not tree.call(call.seq).exists(), timeout_s=10,
                 what="the call's cgroup to be removed")
    finally:
        agent.kill()
        agent.wait()


@pytest.mark.parametrize("host", [800], indirect=True)
def test_low_priority_call_is_frozen_first_and_thawed_after(daemon, host):
    """Two containers under one 800M host: the low-priority tenant's call is frozen when
    the host nears its limit while the high-priority one runs, and resumes after it."""
    pol = ("priority: {p}\nmemory: {{total: 2G, tool_default: 1G}}\nfreeze_timeout: 60s\n"
           "admission_timeout: 0s\n")
    low_t, low_s = register(daemon, host.child("low"), "low", pol.format(p="low"))
    high_t, high_s = register(daemon, host.child("high"), "high", pol.format(p="high"))
    high = start_call(high_s, high_t.framework, "pytest -x", mb=300, step_mb=20)
    low = None
    try:
        high.read_until("done")  # the high-priority call holds 300M
        low = start_call(low_s, low_t.framework, "npm test", mb=560, step_mb=10, step_ms=40,
                         wait="exit")
        wait_for(lambda: ("freeze", low.seq) in actions(daemon, "low"), what="low frozen")
        assert actions(daemon, "high") == []
        time.sleep(0.2)
        low.drain()
        at = low.allocated_mb()
        time.sleep(0.5)
        low.drain()
        assert low.proc.poll() is None and low.allocated_mb() == at < 560
        high.release()
        high.proc.wait(timeout=10)
        end_call(high_s, high_t.framework, high.seq, 0)
        assert low.read_until("done", timeout_s=30)  # thawed once the host had room
        low.proc.wait(timeout=10)
        assert low.proc.returncode == 0
        assert ("thaw", low.seq) in actions(daemon, "low")
        end_call(low_s, low_t.framework, low.seq, 0)
        rec = daemon.records("low")[-1]
        assert rec["freezes"] >= 1 and rec["frozen_s"] > 0 and "killed_by_agentshim" not in rec
        assert daemon.records("high")[-1]["freezes"] == 0
        pressure = [e for e in daemon.events("high") if e["action"] == "pressure"]
        assert any(e["scope"] == "host" and e["level"] != "ok" for e in pressure)
    finally:
        two_tenants_gone(daemon, [low, high], [low_t, high_t])


def test_over_the_mark_a_frozen_lower_priority_call_is_killed_to_make_room(daemon, host):
    pol = ("priority: {p}\nmemory: {{total: 2G, tool_default: 1G}}\nfreeze_timeout: 60s\n"
           "admission_timeout: 0s\n")
    low_t, low_s = register(daemon, host.child("low"), "low", pol.format(p="low"))
    high_t, high_s = register(daemon, host.child("high"), "high", pol.format(p="high"))
    low = start_call(low_s, low_t.framework, "npm test", mb=330, step_mb=10, step_ms=20)
    high = None
    try:
        low.read_until("done")
        high = start_call(high_s, high_t.framework, "pytest", mb=360, step_mb=10, step_ms=20)
        high.read_until("done")
        low.proc.wait(timeout=10)
        assert low.proc.returncode == -9
        acts = actions(daemon, "low")
        assert acts[:2] == [("freeze", low.seq), ("kill", low.seq)], acts
        assert actions(daemon, "high") == []
        kill = next(e for e in daemon.events("low") if e["action"] == "kill")
        assert "higher-priority" in kill["reason"]
    finally:
        two_tenants_gone(daemon, [low, high], [low_t, high_t])


def test_growing_call_is_frozen_near_the_total_and_thawed_when_a_sibling_ends(daemon,
                                                                              scratch):
    """One container, two calls of one priority: the one growing past the 90% mark is frozen
    (the framework and the other call keep running); when the other call ends, it resumes."""
    tree, sock = register(daemon, scratch, "c2",
                          "memory: {total: 600M, framework_protect: 64M, tool_default: 500M}\n"
                          "freeze_timeout: 60s\nadmission_timeout: 0s\n")
    a = start_call(sock, tree.framework, "python hold.py", mb=200, step_mb=50)
    b = None
    try:
        a.read_until("done")
        b = start_call(sock, tree.framework, "python grow.py", mb=400, step_mb=10, step_ms=20,
                       wait="exit")
        wait_for(lambda: ("freeze", b.seq) in actions(daemon, "c2"), what="b frozen")
        assert ("freeze", a.seq) not in actions(daemon, "c2")
        time.sleep(0.2)
        b.drain()
        at = b.allocated_mb()
        time.sleep(0.5)
        b.drain()
        assert b.proc.poll() is None and b.allocated_mb() == at < 400  # frozen: no progress
        a.release()
        a.proc.wait(timeout=10)
        end_call(sock, tree.framework, a.seq, 0)
        assert b.read_until("done", timeout_s=30)
        b.proc.wait(timeout=10)
        assert b.proc.returncode == 0
        assert ("thaw", b.seq) in actions(daemon, "c2")
    finally:
        for c in (a, b):
            if c is not None:
                c.stop()
