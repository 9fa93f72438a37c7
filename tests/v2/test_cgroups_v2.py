"""The cgroup layer on a pure cgroup v2 kernel, for real (runs inside the virtme-ng VM)."""

from __future__ import annotations

import time

import pytest

from agentshim.cgroups import Cgroup, ContainerTree, MemoryLimits, TreeBudget
from agentshim.units import MIB
from tests.conftest import agent_tree, progress, wait_counting

pytestmark = pytest.mark.v2


def test_tree_obeys_no_internal_process_rule(v2, scratch, workload):
    tree, agent = agent_tree(scratch, workload,
                             TreeBudget(total=512 * MIB, framework_low=64 * MIB,
                                        tools_high=256 * MIB))
    assert Cgroup.of_pid(v2, agent.pid).dirs == tree.framework.dirs
    assert "memory" in scratch.read("unified", "cgroup.subtree_control").split()
    assert "memory" in tree.tools.read("unified", "cgroup.subtree_control").split()
    assert scratch.read("memory", "memory.max").strip() == str(512 * MIB)
    assert tree.tools.read("memory", "memory.high").strip() == str(256 * MIB)
    assert tree.framework.read("memory", "memory.low").strip() == str(64 * MIB)
    tree.destroy()
    assert agent.alive() and Cgroup.of_pid(v2, agent.pid).dirs == scratch.dirs
    assert not tree.framework.dirs["unified"].exists()


def test_memory_high_throttles_and_is_counted(v2, scratch, workload):
    tree = ContainerTree(scratch)
    tree.build(TreeBudget())
    hog = workload("alloc", "--mb", "160", "--step-mb", "4", "--hold", "0.2")
    call = tree.create_call(1, MemoryLimits(high=48 * MIB), pid=hog.pid)
    hog.go()
    deadline = time.monotonic() + 30
    while call.memory_events().high == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert call.memory_events().high > 0, "memory.events high did not count the throttling"
    assert hog.alive() or hog.wait() == 0, "memory.high must throttle, never kill"


def test_memory_max_oom_kill_is_only_in_the_call(v2, scratch, workload):
    tree, agent = agent_tree(scratch, workload, TreeBudget(total=1024 * MIB))
    hog = workload("alloc", "--mb", "300", "--step-mb", "8")
    call = tree.create_call(2, MemoryLimits(max=64 * MIB), pid=hog.pid)
    hog.go()
    assert hog.wait(timeout=60) == -9
    local = {k: int(v) for k, v in (line.split() for line in
             call.read("memory", "memory.events.local").splitlines())}
    assert local["oom_kill"] == 1 and local["max"] > 0
    assert tree.framework.memory_events().oom_kill == 0
    assert agent.alive(), "the framework died with its sibling call"
    assert call.memory_peak() <= 64 * MIB


def test_cgroup_freeze_stops_progress(v2, scratch, workload, tmp_path):
    counter = tmp_path / "count"
    tree = ContainerTree(scratch)
    tree.build(TreeBudget())
    w = workload("count", str(counter), "--interval-ms", "2")
    call = tree.create_call(3, MemoryLimits(), pid=w.pid)
    w.go()
    wait_counting(counter)
    assert progress(counter, 0.5) > 0
    assert call.freeze(wait_s=5) is True
    time.sleep(0.1)
    assert progress(counter, 0.8) == 0
    assert call.thaw(wait_s=5) is True
    assert progress(counter, 0.5) > 0


def test_kill_and_psi_trigger_with_short_window(v2, scratch, workload):
    tree = ContainerTree(scratch)
    tree.build(TreeBudget())
    w = workload("count", "/dev/null")
    call = tree.create_call(4, MemoryLimits(), pid=w.pid)
    with call.psi_trigger(100_000, 1_000_000) as trig:
        assert trig.window_us == 1_000_000, "a 1 s PSI window is permitted in the VM"
    call.kill()
    assert w.wait(timeout=10) == -9
    tree.remove_call(4)
    assert not call.dirs["unified"].exists()
