"""The cgroup layer on this hybrid host, for real: v1 memory/freezer/cpuacct + the v2 tree."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from agentshim.cgroups import Cgroup, CgroupError, ContainerTree, MemoryLimits, TreeBudget
from agentshim.units import MIB
from tests.conftest import agent_tree, progress, wait_counting


def in_cgroup(pid: int, cg: Cgroup) -> bool:
    """True when /proc/PID/cgroup puts the process in cg in every managed hierarchy."""
    return Cgroup.of_pid(cg.layout, pid).dirs == cg.dirs


def test_tree_build_moves_container_processes_into_framework(hybrid, scratch, workload):
    agent = workload("count", "/dev/null")
    scratch.move(agent.pid)
    tree = ContainerTree(scratch)
    moved = tree.build(TreeBudget(total=512 * MIB, framework_low=64 * MIB, tools_high=256 * MIB))
    assert moved == [agent.pid]
    assert in_cgroup(agent.pid, tree.framework)
    assert scratch.procs() == []
    assert scratch.memory_limits().max == 512 * MIB
    assert tree.tools.memory_limits().high == 256 * MIB
    assert tree.framework.memory_limits().low == 64 * MIB
    # the v1 limit files hold exactly what docs/cgroups.md says
    assert tree.tools.read("memory", "memory.limit_in_bytes").strip() == str(256 * MIB)
    assert "oom_kill_disable 1" in tree.tools.read("memory", "memory.oom_control")
    assert tree.framework.read("memory", "memory.soft_limit_in_bytes").strip() == str(64 * MIB)


def test_call_over_its_limit_fails_charges_and_is_oom_killed_alone(hybrid, scratch, workload):
    tree, agent = agent_tree(scratch, workload, TreeBudget(total=1024 * MIB))
    hog = workload("alloc", "--mb", "300", "--step-mb", "8")
    call = tree.create_call(1, MemoryLimits(max=64 * MIB), pid=hog.pid)
    assert in_cgroup(hog.pid, call)
    hog.go()
    rc = hog.wait(timeout=60)
    assert rc == -9, f"expected an OOM kill, got exit {rc}"
    ev = call.memory_events()
    assert ev.max > 0, "v1 failcnt did not grow"
    assert ev.oom_kill >= 1
    assert agent.alive(), "the framework process was hurt by its sibling call's OOM"
    assert tree.framework.memory_events().oom_kill == 0
    assert call.memory_peak() <= 64 * MIB
    tree.remove_call(1)
    assert not any(d.exists() for d in call.dirs.values())


def test_high_budget_on_v1_makes_the_call_wait_instead_of_dying(hybrid, scratch, workload):
    tree = ContainerTree(scratch)
    tree.build(TreeBudget())
    hog = workload("alloc", "--mb", "200", "--step-mb", "8")
    call = tree.create_call(2, MemoryLimits(high=64 * MIB), pid=hog.pid)
    hog.go()
    deadline = time.monotonic() + 20
    while not call.memory_events().under_oom and time.monotonic() < deadline:
        time.sleep(0.05)
    ev = call.memory_events()
    assert ev.under_oom, "the call did not reach its v1 'high' limit"
    assert ev.high > 0 and ev.oom_kill == 0
    time.sleep(0.5)
    assert hog.alive(), "a throttled call must wait, not be killed"
    call.set_memory(MemoryLimits(high=None))  # agentshimd raising the budget
    assert hog.wait(timeout=30) == 0
    assert call.memory_peak() > 150 * MIB


@pytest.mark.parametrize("freezer", ["v1", "v2"])
def test_freeze_stops_progress_and_thaw_resumes(hybrid, scratch, workload, tmp_path, freezer):
    counter = tmp_path / "count"
    tree = ContainerTree(scratch)
    tree.build(TreeBudget())
    w = workload("count", str(counter), "--interval-ms", "2")
    call = tree.create_call(3, MemoryLimits(), pid=w.pid)
    if freezer == "v2":  # the v2 tree's cgroup.freeze, as on a hybrid host without v1 freezer
        call = Cgroup(call.layout, {k: d for k, d in call.dirs.items() if k != "freezer"})
    w.go()
    wait_counting(counter)
    assert progress(counter, 0.3) > 0
    assert call.freeze() is True
    assert call.frozen()
    time.sleep(0.05)
    assert progress(counter, 0.5) == 0, "a frozen call kept running"
    assert w.alive()
    assert call.thaw() is True
    assert progress(counter, 0.3) > 0, "a thawed call did not resume"


def test_kill_ends_only_the_calls_processes(hybrid, scratch, workload):
    tree, agent = agent_tree(scratch, workload, TreeBudget())
    calls = [workload("count", "/dev/null") for _ in range(3)]
    call = tree.create_call(4, MemoryLimits())
    for w in calls:
        call.move(w.pid)
    call.kill()
    for w in calls:
        assert w.wait(timeout=10) == -9
    assert call.wait_empty(timeout_s=5)
    assert agent.alive()


def test_destroy_leaves_nothing_and_gives_processes_back(hybrid, scratch, workload):
    tree, agent = agent_tree(scratch, workload, TreeBudget(total=256 * MIB))
    straggler = workload("count", "/dev/null")
    call = tree.create_call(5, MemoryLimits(high=64 * MIB), pid=straggler.pid)
    tree.destroy()
    tree.destroy()  # idempotent, as podman may run poststop twice
    assert straggler.wait(timeout=10) == -9, "a running call is killed at teardown"
    assert agent.alive() and in_cgroup(agent.pid, scratch)
    gone = [call, tree.tools, tree.framework]
    for cg in gone:
        for d in cg.dirs.values():
            assert not d.exists(), f"left behind: {d}"


def test_cgroup_id_is_the_v2_inode_and_pressure_reads(hybrid, scratch, workload):
    w = workload("count", "/dev/null")
    scratch.move(w.pid)
    assert Cgroup.of_pid(scratch.layout, w.pid).id == scratch.id
    assert scratch.id == Path(scratch.dirs["unified"]).stat().st_ino
    p = scratch.pressure("memory")
    assert p.some.total_us >= 0 and p.full is not None
    # this host lacks CAP_SYS_RESOURCE: a 1 s window is refused, the layer falls back to 2 s
    with scratch.psi_trigger(100_000, 1_000_000) as trig:
        assert trig.window_us in (1_000_000, 2_000_000)
        assert trig.stall_us * 10 == trig.window_us
        assert trig.poll(0) in (True, False)


def test_errors_name_path_and_errno(hybrid, scratch):
    with pytest.raises(CgroupError) as ei:
        scratch.write("memory", "memory.limit_in_bytes", "lots")
    msg = str(ei.value)
    assert str(scratch.dirs["memory"] / "memory.limit_in_bytes") in msg
    assert "EINVAL" in msg and ei.value.errno == errno.EINVAL
    with pytest.raises(CgroupError) as ei:
        scratch.move(999_999_999)
    assert "ESRCH" in str(ei.value) or "EINVAL" in str(ei.value)


def test_failed_create_leaves_no_directory(hybrid, scratch):
    # a cgroup whose unified parent does not exist: the v1 dirs made first must be undone
    cg = scratch.child("x")
    broken = Cgroup(cg.layout, {**cg.dirs, "unified": cg.dirs["unified"].parent / "no" / "x"})
    with pytest.raises(CgroupError) as ei:
        broken.create()
    assert "ENOENT" in str(ei.value) and "/no/x" in str(ei.value)
    assert not any(d.exists() for d in broken.dirs.values())


def test_kill_reaches_processes_held_by_the_v1_freezer(hybrid, scratch, workload, tmp_path):
    """cgroup.kill on the v2 tree leaves v1-frozen tasks stuck in the refrigerator unless
    the freezer is thawed: kill() must do both."""
    tree = ContainerTree(scratch)
    tree.build(TreeBudget())
    w = workload("count", str(tmp_path / "c"), "--interval-ms", "2")
    call = tree.create_call(5, MemoryLimits(), pid=w.pid)
    w.go()
    wait_counting(tmp_path / "c")
    assert call.freeze() is True
    call.kill()
    assert w.wait(timeout=10) == -9
    assert call.wait_empty(timeout_s=5)
