"""Offloading a frozen call's memory to swap, for real: a process holding data that compresses
like real memory (not same-filled pages, which zram stores for free) is frozen, offloaded,
and its resident memory falls by most of its size; thawed, it reads every byte back intact.
Then the ladder does it by itself: a call frozen for its scope's pressure is offloaded (event
and record). Runs on the hybrid host here and, through tests/v2/test_offload_v2.py, on v2.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentshim.cgroups import Cgroup, ContainerTree, MemoryLimits, TreeBudget
from agentshim.units import MIB
from tests.daemon_support import Call, Daemon, register, start_call, start_daemon, wait_for
from tests.host.test_ladder import host  # noqa: F401 (the shared parent cgroup fixture)

#: holds MB of data (random blocks interleaved with text: ~3x compressible), prints its
#: digest, then on each line of stdin re-reads everything and prints the digest again
HOLDER = r"""
import hashlib, os, sys
mb = int(sys.argv[1])
text = (b"def test_case_%d(self):\n    assert compute(x) == expected\n" * 9000)[:1 << 19]
chunks = [os.urandom(1 << 19) if i % 3 == 0 else text for i in range(2 * mb)]
blocks = [bytearray(c) for c in chunks]
for i, b in enumerate(blocks):
    b[:8] = i.to_bytes(8, "little")  # every page distinct from the others
def digest():
    h = hashlib.sha256()
    for b in blocks:
        h.update(b)
    return h.hexdigest()
print("ready", digest(), flush=True)
for line in sys.stdin:
    print("again", digest(), flush=True)
"""


def hold(cg, mb: int) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(mb)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: cg.move(os.getpid()))
    line = p.stdout.readline().split()
    assert line and line[0] == "ready", line
    return p, line[1]


def test_a_frozen_call_is_offloaded_and_reads_back_intact(scratch, swap):
    tree = ContainerTree(scratch)
    tree.build(TreeBudget())
    call = tree.create_call(1, MemoryLimits(high=1024 * MIB))
    p, digest = hold(call, 256)
    try:
        assert call.freeze(wait_s=5)
        before = call.memory_usage()
        assert before >= 256 * MIB
        gone = call.offload()
        after = call.memory_usage()
        assert gone >= 0.7 * before and after <= 0.3 * before, (before, gone, after)
        assert call.memory_limits().high == 1024 * MIB  # the budget is back as it was
        assert call.thaw(wait_s=5)
        p.stdin.write("x\n")
        p.stdin.flush()
        again = p.stdout.readline().split()
        assert again == ["again", digest]  # every byte came back
    finally:
        call.kill()  # thaws a v1 freezer, so the kill lands even if an assertion failed frozen
        p.wait(timeout=30)
        tree.remove_call(1)


POLICY = ("priority: {p}\nmemory: {{total: 2G, tool_default: 1G}}\nfreeze_timeout: 60s\n"
          "admission_timeout: 0s\n")


@contextlib.contextmanager
def low_holding(tmp_path: Path, parent: Cgroup, env: dict[str, str]
                ) -> Iterator[tuple[Daemon, ContainerTree, Call, Callable[[int, float], Call]]]:
    """A private agentshimd with tenants low and high under parent (the host cgroup), low's
    call holding 300 MB:
    (the daemon, low's tree, low's call, start_high(mb, step_ms) starting a call of high)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    daemon = start_daemon(tmp_path, bpf=False, extra_env=env)
    low = None
    try:
        low_t, low_s = register(daemon, parent.child("low"), "low", POLICY.format(p="low"))
        high_t, high_s = register(daemon, parent.child("high"), "high", POLICY.format(p="high"))
        low = start_call(low_s, low_t.framework, "python low.py", mb=300, step_mb=20)
        low.read_until("done")

        def high(mb: int, step_ms: float) -> Call:
            return start_call(high_s, high_t.framework, "python high.py", mb=mb, step_mb=10,
                              step_ms=step_ms, wait="exit")
        yield daemon, low_t, low, high
    finally:
        if low is not None:
            low.stop()
        assert daemon.stop() == 0


@pytest.mark.parametrize("host", [700], indirect=True)
def test_the_ladder_offloads_a_call_it_froze_for_its_scope(tmp_path, host, swap):  # noqa: F811
    with low_holding(tmp_path, host, {"AGENTSHIM_OFFLOAD": "1"}) as (daemon, _, low,
                                                                    start_high):
        high = start_high(400, 20)
        try:
            ev = wait_for(lambda: [e for e in daemon.events("low") if e["action"] == "offload"],
                          timeout_s=60, what="the frozen low call to be offloaded")
            assert ev[0]["call"] == low.seq and ev[0]["bytes"] >= 100 * MIB
            assert high.read_until("done", timeout_s=60)
        finally:
            high.stop()


@pytest.mark.parametrize("host", [700], indirect=True)
def test_with_ample_swap_the_page_policy_lets_the_kernel_page(tmp_path, host, swap):  # noqa: F811
    """Swap policy "page" (the default) with ample swap: calls may swap, and the ladder does not
    freeze or kill for the scope's pressure; the kernel pages, as it would without agentshim,
    and both calls complete."""
    with low_holding(tmp_path, host, {"AGENTSHIM_SWAP_POLICY": "page"}) as (
            daemon, low_tree, low, start_high):
        call = low_tree.call(low.seq)
        if call.layout.mode == "v2":
            assert call.read("memory", "memory.swap.max").strip() == "max"
        else:
            assert call.read("memory", "memory.swappiness").strip() != "0"
        high = start_high(500, 10)
        try:
            assert high.read_until("done", timeout_s=90)
            assert high.proc.wait(timeout=30) == 0
            acts = [e["action"] for c in ("low", "high") for e in daemon.events(c)]
            assert "freeze" not in acts and "kill" not in acts, acts
            assert low.proc.poll() is None  # still holding its memory (some of it in swap)
        finally:
            high.stop()
