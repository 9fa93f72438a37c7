"""The memory-event BPF programs on this host, for real: hybrid cgroups, kernel 6.18, memcg and
vmscan tracepoints, no kprobes. v1 limits: memory.limit_in_bytes (+ oom_control).

What fires here (measured, see docs/bpf.md): a charge at the v1 limit starts memcg reclaim in
the charging task (MAX + RECLAIM); with the OOM killer on, oom:mark_victim follows (OOM);
HIGH has no source (no kprobes, and v1 has no memory.high).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentshim.bpf import (
    EVENT_TYPES,
    BpfCompileError,
    BpfUnavailable,
    EventType,
    MemEvents,
    detect_hook_points,
    plan_description,
)
from agentshim.bpf import loader as loader_mod
from agentshim.cgroups import MemoryLimits
from agentshim.units import MIB
from tests.bpf_support import collect, container, events_until_exit, need_bcc, of, watching

need_bcc(module=True)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mev() -> Iterator[MemEvents]:
    """One compiled program set for the module (compiling takes ~0.5 s)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs")
    with MemEvents(rate_ms=10) as m:
        yield m


def bpftool_progs() -> list[dict]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out or "[]")


# --- hook point selection ------------------------------------------------------------------

def test_plan_matches_what_this_kernel_offers(hybrid):
    plan = detect_hook_points(memory_v1=True)
    tfs = plan.tracefs
    assert tfs is not None, "tracefs should be mounted (or mountable) on this host"
    targets = {a.target for a in plan.attach}
    for tp in ("sched:sched_process_exec", "sched:sched_process_exit", "oom:mark_victim",
               "vmscan:mm_vmscan_memcg_reclaim_begin", "vmscan:mm_vmscan_memcg_reclaim_end"):
        assert ((tfs / "events" / tp.replace(":", "/")).is_dir()) == (tp in targets), tp
    if (tfs / "events/memcg/count_memcg_events").is_dir():
        assert plan.source_of("CHARGE").startswith("tracepoint memcg:count_memcg_events")
    kinds = {a.kind for a in plan.attach}
    if not plan.kprobes_supported:  # this host: CONFIG_KPROBES is off
        assert kinds == {"tracepoint"}
        assert plan.source_of("HIGH") == ""
        assert any("HIGH" in n for n in plan.notes)
    assert "-DHAVE_TP_SCHED_EXEC" in plan.cflags()
    assert {"MAX", "RECLAIM", "OOM", "EXEC", "EXIT"} <= set(plan.event_types)
    text = plan_description()  # what doctor shows, without compiling
    assert "MAX" in text and "CHARGE   -- " in text  # not requested, or no source


def _fake_tracefs(root: Path, events: dict[str, str]) -> Path:
    for name, fields in events.items():
        d = root / "events" / name.replace(":", "/")
        d.mkdir(parents=True)
        lines = ["format:", "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;"]
        lines += [f"\tfield:{f};\toffset:8;\tsize:8;\tsigned:0;" for f in fields.split(",")]
        (d / "format").write_text("\n".join(lines) + "\n")
    return root


SCHED = {"sched:sched_process_exec": "__data_loc char[] filename,pid_t pid,pid_t old_pid",
         "sched:sched_process_exit": "char comm[16],pid_t pid,int prio"}
RECLAIM = {"vmscan:mm_vmscan_memcg_reclaim_begin": "int order,unsigned long gfp_flags",
           "vmscan:mm_vmscan_memcg_reclaim_end": "unsigned long nr_reclaimed"}


def test_plan_on_a_61_like_kernel_uses_kprobes(tmp_path):
    tfs = _fake_tracefs(tmp_path / "tracing", {**SCHED, **RECLAIM})
    (tfs / "kprobe_events").write_text("")
    (tfs / "available_filter_functions").write_text(
        "try_charge_memcg\nmem_cgroup_handle_over_high\nmem_cgroup_out_of_memory\n")
    plan = detect_hook_points(tfs, kallsyms=tmp_path / "none", kprobe_pmu=tmp_path / "none",
                              release="6.1.0-56-amd64", memory_v1=False, mount=False)
    got = {(a.kind, a.target) for a in plan.attach}
    assert ("kprobe", "mem_cgroup_handle_over_high") in got
    assert ("kretprobe", "mem_cgroup_handle_over_high") in got
    assert ("kprobe", "try_charge_memcg") in got
    assert ("kprobe", "mem_cgroup_out_of_memory") in got  # no oom:mark_victim here
    assert plan.symbol_source == "available_filter_functions"
    assert plan.ringbuf  # 6.1 >= 5.8 (no kallsyms to tell otherwise)
    assert "-DUSE_KPROBE_OVER_HIGH" in plan.cflags()
    assert "-DHAVE_TP_MEMCG_COUNT_EVENTS" not in plan.cflags()
    assert plan.only(["EXEC"]).cflags() == ["-DHAVE_TP_SCHED_EXEC", "-DHAVE_EXEC_FILENAME"]


def test_plan_without_kprobes_and_with_renamed_over_high(tmp_path):
    tfs = _fake_tracefs(tmp_path / "tracing", {
        **SCHED, **RECLAIM,
        "memcg:count_memcg_events": "u64 id,int item,unsigned long val",
        "oom:mark_victim": "int pid,__data_loc char[] comm,unsigned long anon_rss",
    })
    ksyms = tmp_path / "kallsyms"
    ksyms.write_text("ffffffff81691720 T __mem_cgroup_handle_over_high\n"
                     "ffffffff81529da0 t ringbuf_map_alloc\n")
    plan = detect_hook_points(tfs, kallsyms=ksyms, kprobe_pmu=tmp_path / "none",
                              release="6.18.0", mount=False)
    assert {a.kind for a in plan.attach} == {"tracepoint"}  # kallsyms alone is not enough
    assert plan.source_of("CHARGE").startswith("tracepoint memcg:count_memcg_events")
    assert "HAVE_MARK_VICTIM_COMM" in plan.defines
    assert "HAVE_MARK_VICTIM_RSS" not in plan.defines  # file_rss/shmem_rss missing
    (tfs / "kprobe_events").write_text("")
    plan = detect_hook_points(tfs, kallsyms=ksyms, kprobe_pmu=tmp_path / "none",
                              release="6.18.0", mount=False)
    assert ("kprobe", "__mem_cgroup_handle_over_high") in {(a.kind, a.target)
                                                           for a in plan.attach}


# --- events from real cgroups ----------------------------------------------------------------

def test_nested_call_over_its_limit_reports_max_reclaim_oom_exec_exit(hybrid, scratch, mev,
                                                                     execs):
    tree = container(scratch)
    call = tree.create_call(1, MemoryLimits(max=64 * MIB))
    nested = call.child("sub")  # e.g. a process that made its own cgroup below the call
    nested.create()
    hog = execs("alloc", "--mb", "300", "--step-mb", "8")
    nested.move(hog.pid)
    with watching(mev, tree.root) as slot:
        hog.go()
        events = collect(mev, lambda: hog.proc.poll() is not None)
    assert hog.proc.returncode == -9, "expected the v1 OOM killer"
    nid = nested.id
    assert nid != call.id
    mine = [e for e in events if e.cgroup_id == nid]
    assert mine and all(e.slot == slot for e in mine)

    maxes = of(events, EventType.MAX, nid)
    assert maxes, f"no MAX event for the nested cgroup: {events}"
    real = [e for e in maxes if not e.is_tail]  # tails (pid 0) can be listed first
    assert real and real[0].pid == hog.pid and real[0].count >= 1
    reclaims = of(events, EventType.RECLAIM, nid)
    assert reclaims and sum(e.duration_ns for e in reclaims) > 0
    assert sum(e.count for e in reclaims) == sum(e.count for e in maxes), \
        "every reclaim begun at the limit should end"
    oom = of(events, EventType.OOM, nid)
    assert len(oom) == 1 and oom[0].pid == hog.pid
    assert oom[0].comm.startswith("python") and oom[0].value > 32 * MIB  # victim's rss
    exe = of(events, EventType.EXEC, nid)
    assert [e.pid for e in exe] == [hog.pid]
    assert exe[0].filename == sys.executable[:127] and exe[0].comm.startswith("python")
    assert [e.pid for e in of(events, EventType.EXIT, nid)] == [hog.pid]
    assert not of(events, EventType.HIGH)  # no source here
    # order: the limit is hit (MAX) before the kill (OOM), both after the exec
    assert exe[0].ts_ns < maxes[0].ts_ns < oom[0].ts_ns
    # v1 memory.failcnt also counts failed batch charges retried page-sized without reclaim,
    # so it is an upper bound here (on v2, MAX equals memory.events "max": tests/v2)
    assert 0 < sum(e.count for e in maxes) <= call.memory_events().max


def test_v1_high_budget_reports_max_and_reclaim_but_no_oom(hybrid, scratch, mev, execs):
    tree = container(scratch)
    call = tree.create_call(2, MemoryLimits(high=64 * MIB))
    hog = execs("alloc", "--mb", "200", "--step-mb", "8")
    call.move(hog.pid)
    with watching(mev, tree.root):
        hog.go()
        events = collect(mev, lambda: call.memory_events().under_oom, timeout_s=20)
        assert call.memory_events().under_oom, "the call never reached its v1 'high' limit"
        assert hog.proc.poll() is None, "a throttled call waits, it is not killed"
        assert of(events, EventType.MAX, call.id) and of(events, EventType.RECLAIM, call.id)
        assert not of(events, EventType.OOM)
        call.set_memory(MemoryLimits(high=None))  # agentshimd raising the budget
        assert hog.proc.wait(timeout=30) == 0
        events += collect(mev, lambda: True)
    assert [e.pid for e in of(events, EventType.EXIT, call.id)] == [hog.pid]


def test_unwatched_sibling_produces_no_events(hybrid, scratch, mev, execs):
    watched = container(scratch, "watched")
    other = container(scratch, "other")
    call = other.create_call(1, MemoryLimits(max=64 * MIB))
    hog = execs("alloc", "--mb", "300", "--step-mb", "8")
    events = events_until_exit(mev, watched.root, call, hog)
    assert hog.proc.returncode == -9  # the sibling really hit its limit and was killed
    assert call.memory_events().oom_kill >= 1
    assert events == [], f"events from an unwatched cgroup: {events}"


def test_unwatch_stops_events_and_frees_the_slot(hybrid, scratch, mev, execs):
    tree = container(scratch)
    call = tree.create_call(1, MemoryLimits())
    slot = mev.watch(tree.root.dirs["unified"])
    assert mev.watched()[slot] == tree.root.dirs["unified"]
    mev.unwatch(slot)
    mev.unwatch(slot)  # idempotent
    assert slot not in mev.watched()
    quiet = execs("alloc", "--mb", "1")
    call.move(quiet.pid)
    quiet.go()
    events = collect(mev, lambda: quiet.proc.poll() is not None)
    assert events == []
    with watching(mev, tree.root) as again:
        assert again == slot  # the lowest free slot is reused
        loud = execs("alloc", "--mb", "1")
        call.move(loud.pid)
        loud.go()
        events = collect(mev, lambda: loud.proc.poll() is not None)
    # watched again: the workload's exec and its exit are reported (the held shell's own
    # exec may be reported too, with the same pid: exec keeps it)
    got = [e for e in events if e.pid == loud.pid]
    assert [e.type for e in got][-1:] == [EventType.EXIT], got
    assert any(e.type == EventType.EXEC and e.comm.startswith("python") for e in got), got
    assert all(e.type == EventType.EXEC for e in got[:-1]), got


def test_charge_is_aggregated_per_cgroup_and_period(hybrid, scratch, execs):
    with MemEvents(types=EVENT_TYPES, rate_ms=50) as m:
        if not m.plan.source_of("CHARGE"):
            pytest.skip("no CHARGE source on this kernel")
        tree = container(scratch)
        call = tree.create_call(1, MemoryLimits())
        hog = execs("alloc", "--mb", "200", "--step-mb", "8")
        call.move(hog.pid)
        with watching(m, tree.root):
            t0 = time.monotonic()
            hog.go()
            events = collect(m, lambda: hog.proc.poll() is not None)
            elapsed = time.monotonic() - t0
    charges = of(events, EventType.CHARGE, call.id)
    pages = sum(e.count for e in charges)
    total = sum(e.value for e in charges)
    assert total >= 200 * MIB, f"charged {total / MIB:.0f} MiB, expected >= 200"
    assert len(charges) <= elapsed / 0.05 + 3, f"{len(charges)} events in {elapsed:.2f} s"
    assert pages > 10 * len(charges), "events should fold many charges each"
    assert charges[0].count == 1  # the first charge goes out at once


def test_perf_buffer_fallback_delivers_the_same_events(hybrid, scratch, execs):
    with MemEvents(ringbuf=False, types=["EXEC", "EXIT"]) as m:
        assert "perf buffer" in m.plan_description()
        tree = container(scratch)
        call = tree.create_call(1, MemoryLimits())
        p = execs("alloc", "--mb", "1")
        events = events_until_exit(m, tree.root, call, p)
    assert [(e.type, e.pid, e.cgroup_id) for e in events] == [
        (EventType.EXEC, p.pid, call.id), (EventType.EXIT, p.pid, call.id)]
    assert m.lost == 0


# --- lifetime and errors -----------------------------------------------------------------------

def test_close_detaches_and_unloads_every_program(hybrid):
    m = MemEvents()
    ids = m.program_ids()
    assert len(ids) == len(m.plan.attach)
    loaded = {p["id"]: p.get("name", "") for p in bpftool_progs()}
    assert all(loaded[i].startswith(loader_mod.PROG_PREFIX) for i in ids), loaded
    desc = m.plan_description()
    m.close()
    m.close()  # idempotent
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [p for p in bpftool_progs() if p["id"] in ids]
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"programs still loaded after close(): {left}"
    assert "MAX" in desc and "OOM" in desc
    with pytest.raises(loader_mod.BpfError):
        m.poll(0)


def test_compile_error_names_the_problem(hybrid, tmp_path):
    bad = tmp_path / "bad.bpf.c"
    bad.write_text((REPO / "bpf/memevents.bpf.c").read_text()
                   + "\nint ashim_broken(void *ctx) { return undefined_thing; }\n")
    with pytest.raises(BpfCompileError) as ei:
        MemEvents(source=bad)
    assert "undefined_thing" in str(ei.value) and "undeclared" in ei.value.log


def test_missing_bcc_is_bpf_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "bcc", None)  # import bcc -> ImportError
    with pytest.raises(BpfUnavailable, match="python3-bpfcc"):
        MemEvents()
