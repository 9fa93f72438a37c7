"""Shared fixtures: the host's cgroup layout, scratch cgroups that are always cleaned up, and
real workload processes that wait to be moved into a cgroup before they start."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentshim.cgroups import Cgroup, ContainerTree, Layout, TreeBudget, detect_layout
from tests.daemon_support import Daemon, start_daemon

TEST_PARENT = "agentshim.test"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def layout() -> Layout:
    """This machine's cgroup layout."""
    return detect_layout()


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")


@pytest.fixture
def hybrid(layout: Layout) -> Layout:
    """The layout, when this is a hybrid host (the VM tier covers pure v2)."""
    _need_root()
    if layout.mode != "hybrid":
        pytest.skip(f"host cgroups are {layout.mode}, not hybrid; the v2 tier runs in the VM")
    return layout


@pytest.fixture
def v2(layout: Layout) -> Layout:
    """The layout, when this is a pure cgroup v2 kernel (the VM tier)."""
    _need_root()
    if layout.mode != "v2":
        pytest.skip(f"cgroups are {layout.mode} here; v2 tests run in the VM (make test-vm)")
    return layout


@pytest.fixture
def scratch(layout: Layout) -> Iterator[Cgroup]:
    """A fresh real cgroup (in every managed hierarchy) removed with all it holds afterwards;
    the test fails if anything is left behind."""
    _need_root()
    cg = make_test_cgroup(layout, f"t-{uuid.uuid4().hex[:10]}")
    yield cg
    cg.remove_tree(kill=True)
    leftovers = [str(d) for d in cg.dirs.values() if d.exists()]
    assert not leftovers, f"cgroups left behind: {leftovers}"


class Workload:
    """A real process running agentshim.workload, held until go() is called."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentshim.workload", "--wait-stdin", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"g")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Exec:
    """A shell held until go() that then execs the workload (so an exec event names python and
    the memory is charged to the cgroup the shell was moved to)."""

    def __init__(self, *args: str) -> None:
        script = 'read _; exec "$0" -m agentshim.workload "$@"'
        self.proc = subprocess.Popen(["/bin/sh", "-c", script, sys.executable, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=REPO)
        self.pid = self.proc.pid

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def execs() -> Iterator[Callable[..., Exec]]:
    """Factory of Exec processes; all are killed at teardown."""
    made: list[Exec] = []

    def make(*args: str) -> Exec:
        e = Exec(*args)
        made.append(e)
        return e

    yield make
    for e in made:
        e.stop()


@pytest.fixture
def workload() -> Iterator[Callable[..., Workload]]:
    """Factory of Workload processes; all are killed at teardown."""
    made: list[Workload] = []

    def make(*args: str) -> Workload:
        w = Workload(*args)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


def read_counter(path: Path) -> int:
    """The value a `workload count` process last wrote (0 before its first write)."""
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else 0


def progress(path: Path, seconds: float) -> int:
    """How far a counter advanced during `seconds`."""
    before = read_counter(path)
    time.sleep(seconds)
    return read_counter(path) - before


def wait_counting(path: Path, timeout_s: float = 30.0) -> None:
    """Wait until a `workload count` process has started counting (slow under emulation)."""
    deadline = time.monotonic() + timeout_s
    while read_counter(path) == 0:
        assert time.monotonic() < deadline, f"counter {path} never started"
        time.sleep(0.02)


#: cgroups a test could not remove yet (a zombie only init reaps still counts in v1)
_DEFERRED: list[Cgroup] = []


def remove_when_released(cg: Cgroup, wait_s: float = 5.0) -> None:
    """Remove cg (killing what it holds); if the kernel still counts released tasks (EBUSY)
    after wait_s, try again at the end of the session, where leftovers fail the run."""
    from agentshim.cgroups import CgroupError
    deadline = time.monotonic() + wait_s
    while True:
        try:
            cg.remove_tree(kill=True)
            return
        except CgroupError:
            if time.monotonic() > deadline:
                _DEFERRED.append(cg)
                return
            time.sleep(0.2)


@pytest.fixture(scope="session", autouse=True)
def _remove_test_parent() -> Iterator[None]:
    """Remove the shared agentshim.test parent cgroup at the end, when the tests left it empty."""
    yield
    if os.geteuid() != 0:
        return
    for cg in _DEFERRED:
        remove_when_released(cg, wait_s=120)
        left = [str(d) for d in cg.dirs.values() if d.exists()]
        assert not left, f"cgroups left behind: {left}"
    parent = Cgroup.at(detect_layout(), TEST_PARENT)
    if any(d.exists() for d in parent.dirs.values()) and not parent.children():
        with contextlib.suppress(OSError):
            parent.remove(missing_ok=True)


def make_test_cgroup(layout: Layout, name: str) -> Cgroup:
    """A new cgroup agentshim.test/<name> in every managed hierarchy. On v2 the root and
    agentshim.test hand their controllers down to it."""
    parent = Cgroup.at(layout, TEST_PARENT)
    parent.create(exist_ok=True)
    if layout.mode == "v2":
        # the root is exempt from the no-internal-process rule; agentshim.test holds no process
        Cgroup.at(layout, "").enable_controllers()
        parent.enable_controllers()
    cg = parent.child(name)
    cg.create()
    return cg


def agent_tree(scratch: Cgroup, workload: Callable[..., Workload],
               budget: TreeBudget) -> tuple[ContainerTree, Workload]:
    """A container as agentshim makes it: an agent process (a counting workload) in scratch,
    then the tree built over it with `budget` (which moves the agent into framework/)."""
    agent = workload("count", "/dev/null")
    scratch.move(agent.pid)
    tree = ContainerTree(scratch)
    tree.build(budget)
    return tree, agent


@pytest.fixture(scope="module")
def swap() -> Iterator[int]:
    """Free swap bytes for tests of offloading. Uses the host's swap when it has some (setup-
    host.sh enables zram), else turns /dev/zram0 on (lz4, 2G) for the module and off after;
    skips, saying why, when neither can be had."""
    from agentshim import swap as sw

    if sw.free_bytes() >= 512 << 20:
        yield sw.free_bytes()
        return
    zram = Path("/sys/block/zram0")
    if os.geteuid() == 0 and not zram.exists():  # a module on Debian's kernel (the VM)
        subprocess.run(["modprobe", "zram"], check=False, capture_output=True)
    if os.geteuid() != 0 or not zram.exists():
        pytest.skip("needs swap: no free swap and no /dev/zram0 to turn on (root)")
    if (zram / "disksize").read_text().strip() != "0":
        pytest.skip("needs swap: /dev/zram0 is configured but not swapped on; not touching it")
    try:
        with contextlib.suppress(OSError):
            (zram / "comp_algorithm").write_text("lz4")
        (zram / "disksize").write_text(str(2 << 30))
        subprocess.run(["mkswap", "/dev/zram0"], check=True, capture_output=True)
        subprocess.run(["swapon", "-p", "100", "/dev/zram0"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        with contextlib.suppress(OSError):
            (zram / "reset").write_text("1")
        pytest.skip(f"needs swap: turning /dev/zram0 on failed: {e}")
    try:
        yield sw.free_bytes()
    finally:
        subprocess.run(["swapoff", "/dev/zram0"], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            (zram / "reset").write_text("1")


@pytest.fixture
def daemon(tmp_path: Path, layout: Layout) -> Iterator[Daemon]:
    """A private agentshimd (BPF off, swap policy "bound": tests/daemon_support.start_daemon),
    stopped at the end, which must leave no control socket. Modules that need another kind
    define their own `daemon`."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = start_daemon(tmp_path, bpf=False)
    yield d
    assert d.stop() == 0  # a test may have restarted it
    assert not d.ctl.exists()
