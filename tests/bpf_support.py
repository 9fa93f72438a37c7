"""Helpers shared by the BPF tests of both tiers (tests/host and tests/v2)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from agentshim.bpf import EventType, MemEvent, MemEvents
from agentshim.cgroups import Cgroup, ContainerTree, TreeBudget

if TYPE_CHECKING:
    from tests.conftest import Exec

from agentshim.units import MIB


def collect(mev: MemEvents, done: Callable[[], bool], timeout_s: float = 30.0,
            settle_s: float = 0.3, poll_ms: int = 50) -> list[MemEvent]:
    """Poll until done() (then settle_s more, for aggregated tails) or the timeout."""
    out: list[MemEvent] = []
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        out += mev.poll(poll_ms)
    end = time.monotonic() + settle_s
    while time.monotonic() < end:
        out += mev.poll(poll_ms)
    return out


def of(events: list[MemEvent], etype: EventType, cgroup_id: int | None = None) -> list[MemEvent]:
    """The events of one type (and one leaf cgroup, if given)."""
    return [e for e in events if e.type == etype
            and (cgroup_id is None or e.cgroup_id == cgroup_id)]


@contextlib.contextmanager
def watching(mev: MemEvents, cg: Cgroup) -> Iterator[int]:
    """Watch cg's subtree for the duration of the block."""
    slot = mev.watch(cg.dirs["unified"])
    mev.poll(0)
    try:
        yield slot
    finally:
        mev.unwatch(slot)


def container(scratch: Cgroup, name: str = "ctr") -> ContainerTree:
    """A container cgroup with its agentshim tree under the scratch cgroup (which holds no
    process, so on v2 its controllers can be handed down; a no-op on hybrid hosts)."""
    scratch.enable_controllers()
    root = scratch.child(name)
    root.create()
    tree = ContainerTree(root)
    tree.build(TreeBudget(total=1024 * MIB))
    return tree


def need_bpf() -> None:
    """Skip (saying why) where BPF programs cannot be loaded: not root, or no bcc."""
    import os

    import pytest
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs")
    need_bcc()


def need_bcc(module: bool = False) -> None:
    """Skip (saying why) when bcc is not importable; with module=True, called at module level,
    the whole test module."""
    import pytest
    try:
        import bcc  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"bcc is not importable ({e}): apt-get install python3-bpfcc",
                    allow_module_level=module)


def events_until_exit(mev: MemEvents, root: Cgroup, where: Cgroup, proc: Exec,
                      **collect_kw: float) -> list[MemEvent]:
    """Move the held process proc into `where` and let it go; the events of root's subtree,
    watched until proc exits (collect_kw: collect's timing)."""
    where.move(proc.pid)
    with watching(mev, root):
        proc.go()
        return collect(mev, lambda: proc.proc.poll() is not None, **collect_kw)
