"""Logic of the cgroup layer on fixture cgroupfs trees (temp dirs), in oomd's style.

The kernel-facing behaviour is tested for real in tests/host (hybrid) and tests/v2 (VM)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import agentshim.cgroups.cgroup as cgmod
from agentshim.cgroups import (
    Cgroup,
    CgroupError,
    ContainerTree,
    MemoryLimits,
    TreeBudget,
    layout_from,
    parse_mountinfo,
    parse_pressure,
)
from agentshim.cgroups.layout import Layout
from agentshim.units import MIB

HYBRID_MOUNTINFO = """\
24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
37 35 0:32 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
38 35 0:33 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 35 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 35 0:35 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 35 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

V2_MOUNTINFO = """\
30 24 0:24 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""

V1_FILES = {
    "cgroup.procs": "", "memory.limit_in_bytes": "9223372036854771712",
    "memory.soft_limit_in_bytes": "9223372036854771712", "memory.oom_control":
    "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", "memory.failcnt": "0",
    "memory.usage_in_bytes": "0", "memory.max_usage_in_bytes": "0", "freezer.state": "THAWED",
    "cpuacct.usage": "0",
}
V2_FILES = {
    "cgroup.procs": "", "cgroup.controllers": "cpu memory pids", "cgroup.subtree_control": "",
    "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.freeze": "0", "memory.low": "0",
    "memory.high": "max", "memory.max": "max", "memory.current": "0", "memory.peak": "0",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n", "cpu.stat": "usage_usec 0\n",
    "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
                       "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
}


class FakeCgroupFS:
    """Fixture cgroupfs: mkdir fills in interface files, rmdir refuses a populated cgroup,
    and every write is recorded in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes: list[tuple[str, str]] = []
        monkeypatch.setattr(cgmod, "_mkdir", self.mkdir)
        monkeypatch.setattr(cgmod, "_rmdir", self.rmdir)
        real_write = Cgroup._write

        def write(path: Path, value: str) -> None:
            self.writes.append((str(path), value))
            if path.name == "cgroup.procs":  # a move: take the pid out of every sibling dir
                for other in path.parent.parent.rglob("cgroup.procs"):
                    pids = other.read_text().split()
                    if value in pids:
                        pids.remove(value)
                        other.write_text(" ".join(pids))
                path.write_text((path.read_text() + " " + value).strip())
            elif path.is_file():
                path.write_text(value)  # a cgroupfs file takes the whole new value
            else:
                real_write(path, value)  # raises the layer's CgroupError (ENOENT)

        monkeypatch.setattr(Cgroup, "_write", staticmethod(write))

    @staticmethod
    def populate(d: Path, files: dict[str, str]) -> None:
        for name, text in files.items():
            (d / name).write_text(text)

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)
        self.populate(path, V2_FILES if "unified" in path.parts or "v2" in path.parts
                      else V1_FILES)

    @staticmethod
    def rmdir(path: Path) -> None:
        if any(p.is_dir() for p in path.iterdir()):
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        if (path / "cgroup.procs").read_text().strip():
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        for p in path.iterdir():
            p.unlink()
        os.rmdir(path)


def hybrid_layout(root: Path) -> Layout:
    v1 = {c: root / c for c in ("memory", "freezer", "cpuacct")}
    for d in [*v1.values(), root / "unified"]:
        d.mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    return layout_from(root / "unified", v1)


def v2_layout(root: Path) -> Layout:
    (root / "v2").mkdir()
    (root / "v2" / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    return layout_from(root / "v2", {})


# --- layout detection ------------------------------------------------------------------------
def test_parse_mountinfo_hybrid():
    unified, v1 = parse_mountinfo(HYBRID_MOUNTINFO)
    assert unified == Path("/sys/fs/cgroup/unified")
    assert v1 == {"cpu": Path("/sys/fs/cgroup/cpu"), "cpuacct": Path("/sys/fs/cgroup/cpuacct"),
                  "memory": Path("/sys/fs/cgroup/memory"),
                  "freezer": Path("/sys/fs/cgroup/freezer")}


def test_layout_modes(tmp_path):
    assert hybrid_layout(tmp_path / "h").mode == "hybrid"
    assert v2_layout(tmp_path).mode == "v2"
    unified, v1 = parse_mountinfo(V2_MOUNTINFO)
    assert unified == Path("/sys/fs/cgroup") and v1 == {}
    assert layout_from(None, {"memory": tmp_path}).mode == "v1"
    assert layout_from(None, {}).mode == "none"


def test_controller_locations(tmp_path):
    lay = hybrid_layout(tmp_path)
    loc = lay.controller_locations()
    assert loc["memory"] == str(tmp_path / "memory")
    assert loc["hugetlb"] == str(tmp_path / "unified")


# --- paths -----------------------------------------------------------------------------------
def test_cgroup_at_maps_every_hierarchy(tmp_path):
    lay = hybrid_layout(tmp_path)
    cg = Cgroup.at(lay, "libpod_parent/libpod-abc")
    assert set(cg.dirs) == {"memory", "freezer", "cpuacct", "unified"}
    assert cg.dirs["memory"] == tmp_path / "memory/libpod_parent/libpod-abc"
    fw = cg.child("framework").dirs["unified"]
    assert fw == tmp_path / "unified/libpod_parent/libpod-abc/framework"
    with pytest.raises(ValueError):
        cg.child("../escape")


def test_of_pid_reads_proc_cgroup(tmp_path):
    lay = hybrid_layout(tmp_path / "fs")
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text(
        "9:name=systemd:/x\n6:freezer:/libpod_parent/c\n4:memory:/libpod_parent/c\n"
        "2:cpuacct:/libpod_parent/c\n0::/libpod_parent/c\n")
    cg = Cgroup.of_pid(lay, 42, proc=proc)
    assert cg == Cgroup.at(lay, "libpod_parent/c")
    with pytest.raises(CgroupError) as ei:
        Cgroup.of_pid(lay, 43, proc=proc)
    assert "ENOENT" in str(ei.value) and "43/cgroup" in str(ei.value)


# --- memory budgets --------------------------------------------------------------------------
@pytest.mark.parametrize(("limits", "limit", "oom_off", "soft"), [
    (MemoryLimits(), "-1", "0", "-1"),
    (MemoryLimits(max=100 * MIB), str(100 * MIB), "0", "-1"),
    (MemoryLimits(high=50 * MIB), str(50 * MIB), "1", "-1"),
    (MemoryLimits(high=50 * MIB, max=100 * MIB), str(50 * MIB), "1", "-1"),
    (MemoryLimits(high=200 * MIB, max=100 * MIB), str(100 * MIB), "0", "-1"),
    (MemoryLimits(low=64 * MIB), "-1", "0", str(64 * MIB)),
])
def test_v1_memory_mapping(tmp_path, monkeypatch, limits, limit, oom_off, soft):
    fs = FakeCgroupFS(monkeypatch)
    cg = Cgroup.at(hybrid_layout(tmp_path), "c")
    cg.create()
    cg.set_memory(limits)
    written = {Path(p).name: v for p, v in fs.writes}
    assert written == {"memory.limit_in_bytes": limit, "memory.oom_control": oom_off,
                       "memory.soft_limit_in_bytes": soft}
    assert all(str(tmp_path / "memory") in p for p, _ in fs.writes)


def test_v2_memory_mapping_and_readback(tmp_path, monkeypatch):
    FakeCgroupFS(monkeypatch)
    cg = Cgroup.at(v2_layout(tmp_path), "c")
    cg.create()
    cg.set_memory(MemoryLimits(high=2 * MIB, max=3 * MIB, low=MIB))
    d = cg.dirs["unified"]
    assert (d / "memory.high").read_text() == str(2 * MIB)
    assert (d / "memory.max").read_text() == str(3 * MIB)
    assert (d / "memory.low").read_text() == str(MIB)
    assert cg.memory_limits() == MemoryLimits(high=2 * MIB, max=3 * MIB, low=MIB)
    cg.set_memory(MemoryLimits())
    assert (d / "memory.high").read_text() == "max"
    assert cg.memory_limits() == MemoryLimits()


def test_v1_events_and_readback(tmp_path, monkeypatch):
    FakeCgroupFS(monkeypatch)
    cg = Cgroup.at(hybrid_layout(tmp_path), "c")
    cg.create()
    cg.set_memory(MemoryLimits(high=8 * MIB))
    d = cg.dirs["memory"]
    (d / "memory.failcnt").write_text("17\n")
    (d / "memory.oom_control").write_text("oom_kill_disable 1\nunder_oom 1\noom_kill 0\n")
    ev = cg.memory_events()
    assert (ev.high, ev.max, ev.oom_kill, ev.under_oom) == (17, 17, 0, True)
    assert cg.memory_limits() == MemoryLimits(high=8 * MIB)
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    ev = cg.memory_events()
    assert (ev.high, ev.max, ev.oom_kill) == (0, 17, 2)
    (d / "cpuacct.usage").write_text("123456789")
    assert cg.cpu_usage_us() == 0  # cpuacct lives in its own hierarchy
    (cg.dirs["cpuacct"] / "cpuacct.usage").write_text("123456789")
    assert cg.cpu_usage_us() == 123456


def test_v2_events_usage_peak_cpu(tmp_path, monkeypatch):
    FakeCgroupFS(monkeypatch)
    cg = Cgroup.at(v2_layout(tmp_path), "c")
    cg.create()
    d = cg.dirs["unified"]
    (d / "memory.events").write_text("low 1\nhigh 5\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n")
    (d / "memory.current").write_text("4096\n")
    (d / "memory.peak").write_text("8192\n")
    (d / "cpu.stat").write_text("usage_usec 777\nuser_usec 700\nsystem_usec 77\n")
    ev = cg.memory_events()
    assert (ev.low, ev.high, ev.max, ev.oom, ev.oom_kill) == (1, 5, 2, 1, 1)
    assert (cg.memory_usage(), cg.memory_peak(), cg.cpu_usage_us()) == (4096, 8192, 777)


def test_freezer_choice(tmp_path, monkeypatch):
    fs = FakeCgroupFS(monkeypatch)
    cg = Cgroup.at(hybrid_layout(tmp_path / "h"), "c")
    cg.create()
    (cg.dirs["freezer"] / "freezer.state").write_text("FROZEN")  # the fake freezes at once
    assert cg.freeze(wait_s=0.1)
    assert fs.writes[-1] == (str(cg.dirs["freezer"] / "freezer.state"), "FROZEN")
    cg2 = Cgroup.at(v2_layout(tmp_path), "c")
    cg2.create()
    assert cg2.freeze(wait_s=0.05) is False  # the fake never reports frozen 1: a timeout
    assert fs.writes[-1] == (str(cg2.dirs["unified"] / "cgroup.freeze"), "1")


# --- creation, rollback, the no-internal-process rule ------------------------------------------
def test_failed_create_undoes_partial_mkdirs(tmp_path, monkeypatch):
    FakeCgroupFS(monkeypatch)
    lay = hybrid_layout(tmp_path)
    cg = Cgroup.at(lay, "parent/c")
    (tmp_path / "memory/parent").mkdir()
    (tmp_path / "freezer/parent").mkdir()
    with pytest.raises(CgroupError) as ei:
        cg.create()  # cpuacct/parent does not exist
    assert "ENOENT" in str(ei.value) and str(tmp_path / "cpuacct/parent/c") in str(ei.value)
    assert not (tmp_path / "memory/parent/c").exists()
    assert not (tmp_path / "freezer/parent/c").exists()


def test_build_moves_then_enables_controllers(tmp_path, monkeypatch):
    fs = FakeCgroupFS(monkeypatch)
    root = Cgroup.at(v2_layout(tmp_path), "ctr")
    root.create()
    (root.dirs["unified"] / "cgroup.procs").write_text("101 102")
    tree = ContainerTree(root)
    budget = TreeBudget(total=4096 * MIB, framework_low=256 * MIB, tools_high=3 * 1024 * MIB)
    moved = tree.build(budget)
    assert moved == [101, 102]
    assert tree.framework.procs() == [101, 102] and root.procs() == []
    order = [(Path(p).relative_to(tmp_path / "v2").as_posix(), v) for p, v in fs.writes]
    i_moves = [i for i, (p, _) in enumerate(order) if p == "ctr/framework/cgroup.procs"]
    i_enable = order.index(("ctr/cgroup.subtree_control", "+memory +cpu +pids"))
    assert i_moves and max(i_moves) < i_enable, "controllers enabled before processes moved"
    assert ("ctr/tools/cgroup.subtree_control", "+memory +cpu +pids") in order
    assert ("ctr/memory.max", str(4096 * MIB)) in order
    assert ("ctr/framework/memory.low", str(256 * MIB)) in order
    assert ("ctr/tools/memory.high", str(3 * 1024 * MIB)) in order


def test_failed_build_rolls_back_everything(tmp_path, monkeypatch):
    fs = FakeCgroupFS(monkeypatch)
    root = Cgroup.at(v2_layout(tmp_path), "ctr")
    root.create()
    (root.dirs["unified"] / "cgroup.procs").write_text("101")
    real_write = Cgroup._write

    def failing(path: Path, value: str) -> None:
        if path.parent.name == "tools" and path.name == "memory.high":
            raise CgroupError(f"write {value!r} to", path, OSError(errno.EBUSY, "busy"))
        real_write(path, value)

    monkeypatch.setattr(Cgroup, "_write", staticmethod(failing))
    with pytest.raises(CgroupError) as ei:
        ContainerTree(root).build(TreeBudget(tools_high=MIB))
    assert "tools/memory.high" in str(ei.value) and "EBUSY" in str(ei.value)
    assert root.procs() == [101], "processes must go back to the container cgroup"
    assert not (root.dirs["unified"] / "framework").exists()
    assert not (root.dirs["unified"] / "tools").exists()
    assert fs.writes  # the fake saw the moves


def test_create_call_rolls_back_when_move_fails(tmp_path, monkeypatch):
    FakeCgroupFS(monkeypatch)
    root = Cgroup.at(hybrid_layout(tmp_path), "ctr")
    root.create()
    tree = ContainerTree(root)
    tree.build(TreeBudget())

    def refuse(path: Path, value: str) -> None:
        raise CgroupError(f"write {value!r} to", path, OSError(errno.ESRCH, "No such process"))

    monkeypatch.setattr(Cgroup, "_write", staticmethod(refuse))
    with pytest.raises(CgroupError):
        tree.create_call(7, MemoryLimits(), pid=4242)
    assert tree.calls() == []
    assert not any(d.exists() for d in tree.call(7).dirs.values())


def test_destroy_is_idempotent_on_fixture(tmp_path, monkeypatch):
    FakeCgroupFS(monkeypatch)
    root = Cgroup.at(hybrid_layout(tmp_path), "ctr")
    root.create()
    tree = ContainerTree(root)
    tree.build(TreeBudget())
    tree.create_call(1, MemoryLimits(high=MIB))
    tree.create_call(2, MemoryLimits(high=MIB))
    assert [c.name for c in tree.calls()] == ["call-1", "call-2"]
    tree.destroy()
    tree.destroy()
    for key in ("memory", "freezer", "cpuacct", "unified"):
        assert [p.name for p in (tmp_path / key / "ctr").iterdir() if p.is_dir()] == []


# --- PSI and errors --------------------------------------------------------------------------
def test_parse_pressure():
    p = parse_pressure("some avg10=1.50 avg60=0.20 avg300=0.00 total=12345\n"
                       "full avg10=0.50 avg60=0.10 avg300=0.00 total=678\n")
    assert p.some.avg10 == 1.5 and p.some.total_us == 12345
    assert p.full is not None and p.full.total_us == 678
    assert parse_pressure("some avg10=0 avg60=0 avg300=0 total=0\n").full is None
    with pytest.raises(ValueError):
        parse_pressure("garbage\n")


def test_error_message_names_op_path_errno():
    e = CgroupError("write '+memory' to", "/sys/fs/cgroup/x/cgroup.subtree_control",
                    OSError(errno.EBUSY, "Device or resource busy"))
    assert str(e) == ("write '+memory' to /sys/fs/cgroup/x/cgroup.subtree_control: "
                      "Device or resource busy (EBUSY)")
    assert e.errno == errno.EBUSY
