"""agentshimd with its BPF programs loaded: events of managed calls (nested cgroups too) reach
the event log and call records, unmanaged processes are not seen, and nothing of ours stays in
the kernel once the daemon stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentshim.cgroups import Cgroup
from tests.bpf_support import need_bpf
from tests.daemon_support import end_call, register, start_call, start_daemon, wait_for


@pytest.fixture
def bpf_daemon(tmp_path):
    need_bpf()
    d = start_daemon(tmp_path, bpf=True)
    st = d.wait_bpf()
    if st["bpf"] != "loaded":
        d.stop()
        pytest.fail(f"agentshimd could not load its BPF programs: {st['bpf']}")
    yield d
    d.stop()


def run_in(cg: Cgroup, argv: list[str]) -> int:
    """Run argv to completion from inside cg; its pid."""
    p = subprocess.Popen(argv, preexec_fn=lambda: cg.move(os.getpid()))
    p.wait(timeout=30)
    return p.pid


def prog_exists(prog_id: int) -> bool:
    r = subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True)
    return r.returncode == 0


def test_exec_events_name_the_commands_of_a_call_even_in_nested_cgroups(bpf_daemon, scratch):
    tree, sock = register(bpf_daemon, scratch.child("ctr"), "b1",
                          "memory: {total: 1G, tool_default: 256M}\n")
    outsider = scratch.child("unmanaged")
    outsider.create()
    call = start_call(sock, tree.framework, "make check")
    try:
        here = tree.call(call.seq)
        nested = here.child("inner")  # a call may make cgroups of its own (e.g. systemd-run)
        nested.create()  # (no controllers: a v2 cgroup with processes cannot give any)
        pid_direct = run_in(here, ["/bin/true"])
        pid_nested = run_in(nested, ["/bin/echo", "nested"])
        pid_out = run_in(outsider, ["/bin/true"])
        execs = wait_for(lambda: [e for e in bpf_daemon.events("b1") if e["action"] == "exec"
                                  and e["pid"] in (pid_direct, pid_nested)]
                         if len({e["pid"] for e in bpf_daemon.events("b1")
                                 if e["action"] == "exec"} & {pid_direct, pid_nested}) == 2
                         else None, what="exec events of both processes")
        assert {e["call"] for e in execs} == {call.seq}
        assert {e["source"] for e in execs} == {"bpf"}
        every = [e for f in (bpf_daemon.state / "events").glob("*.jsonl")
                 for e in bpf_daemon.events(f.stem)]
        assert pid_out not in {e.get("pid") for e in every}, "an unmanaged process was seen"
        nested.remove()
        call.release()
        call.proc.wait(timeout=10)
        end_call(sock, tree.framework, call.seq, 0)
        rec = bpf_daemon.records("b1")[-1]
        assert {"true", "echo"} <= set(rec["commands"])
    finally:
        call.stop()
        outsider.remove()


def test_no_program_of_ours_remains_after_the_daemon_stops(bpf_daemon):
    ids = bpf_daemon.status()["enforcer"]["bpf_program_ids"]
    assert ids and all(prog_exists(i) for i in ids)
    assert bpf_daemon.stop() == 0
    assert [i for i in ids if prog_exists(i)] == []


def test_status_describes_the_hook_points_chosen(bpf_daemon):
    st = bpf_daemon.status()["enforcer"]
    assert st["bpf"] == "loaded"
    assert "exec" in st["bpf_plan"].lower()
    cli = str(Path(sys.executable).parent / "agentshim")
    out = subprocess.run([cli, "doctor"], capture_output=True, text=True, env=bpf_daemon.env,
                         timeout=120)
    assert "hook points attached by agentshimd" in out.stdout, out.stdout
