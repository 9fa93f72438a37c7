"""agentshimd for real: a daemon process, real cgroups standing in for a container's, real
processes asking over the broker socket (the wrapper's protocol, spoken from Python here)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from agentshim.cgroups import Cgroup
from agentshim.protocol import request
from agentshim.units import MIB
from tests import daemon_support as support
from tests.daemon_support import end_call, start_call


def register(daemon, scratch, cid="c1",
             policy="memory: {total: 2G}\ncategories: {test: {memory: 1536M}}\n"):
    return support.register(daemon, scratch, cid, policy)


def ask(sock: Path, cg: Cgroup | None, cmd: str, intent: str = "", alloc_mb: int = 0):
    """A real process (moved into cg first, as a container process would be) that asks the
    broker to start a tool call, allocates, then waits for stdin."""
    c = start_call(sock, cg, cmd, mb=alloc_mb, step_mb=max(1, alloc_mb), intent=intent)
    return c.proc, c.reply, c.where


def test_start_moves_the_asker_into_its_call_and_end_records(daemon, scratch):
    tree, sock = register(daemon, scratch)
    p, reply, where = ask(sock, tree.framework, "python -m pytest -q tests/", alloc_mb=64)
    assert reply["ok"] and reply["call"] == 1 and reply["category"] == "test"
    assert reply["grant"] == 1536 * MIB  # the policy's test category
    call = tree.call(1)
    assert "/tools/call-1" in where
    assert call.memory_limits().high == reply["grant"]
    p.stdin.write("x")
    p.stdin.close()
    assert p.wait(timeout=10) == 0
    # the parent wrapper reports from framework/
    end = ask_end(sock, tree.framework, 1, 0)
    assert end["ok"] and end["notice"] == ""
    rec = json.loads((daemon.state / "calls" / "c1.jsonl").read_text().splitlines()[-1])
    assert rec["call"] == 1 and rec["category"] == "test" and rec["end"] == "reported"
    assert rec["peak_bytes"] >= 64 * MIB and rec["exit"] == 0
    # the call's cgroup is removed once the wrapper has its answer, not before
    support.wait_for(lambda: not any(d.exists() for d in call.dirs.values()),
                     timeout_s=10, what="the call's cgroup to be removed")


def ask_end(sock: Path, cg: Cgroup, call: int, status: int) -> dict:
    return end_call(sock, cg, call, status)


def test_a_process_outside_the_container_is_refused(daemon, scratch, layout):
    tree, sock = register(daemon, scratch)
    other = scratch.child("elsewhere")  # a sibling outside framework/tools is still inside
    outsider_cg = Cgroup.at(layout, "agentshim.test")  # another container's place
    p, reply, _ = ask(sock, outsider_cg, "ls")
    p.kill()
    p.wait()
    assert reply == {"ok": False, "error": "peer is not a process of this container"}
    assert tree.calls() == []
    del other


def test_nested_tool_call_stays_in_its_enclosing_call(daemon, scratch):
    tree, sock = register(daemon, scratch)
    p1, r1, _ = ask(sock, tree.framework, "make test")
    p2, r2, where = ask(sock, tree.call(r1["call"]), "bash -c 'echo nested'")
    assert r2 == {"ok": True, "call": -1, "nested": True, "notes": ""}
    assert f"/tools/call-{r1['call']}" in where
    for p in (p1, p2):
        p.kill()
        p.wait()


def test_intent_is_honoured_within_the_budget(daemon, scratch):
    tree, sock = register(daemon, scratch, policy="memory: {total: 2G, tools: 1536M}\n")
    p, reply, _ = ask(sock, tree.framework, "python - <<EOF\nprint(1)\nEOF", intent="memory=8G")
    p.kill()
    p.wait()
    assert reply["ok"] and reply["grant"] == 1536 * MIB
    assert "8G" in reply["notes"]


def test_wrapper_that_dies_is_recorded_by_the_reaper(daemon, scratch):
    tree, sock = register(daemon, scratch)
    p, reply, _ = ask(sock, tree.framework, "git status")
    p.kill()
    p.wait()
    calls_file = daemon.state / "calls" / "c1.jsonl"
    deadline = time.monotonic() + 10
    while not calls_file.exists():
        assert time.monotonic() < deadline, "no record for a call whose wrapper died"
        time.sleep(0.1)
    rec = json.loads(calls_file.read_text().splitlines()[-1])
    assert rec["call"] == reply["call"] and rec["end"] == "no_report"
    assert rec["category"] == "git"


def test_restart_picks_up_registered_containers(daemon, scratch):
    tree, sock = register(daemon, scratch)
    assert daemon.stop() == 0
    daemon.proc = subprocess.Popen([sys.executable, "-m", "agentshim.daemon"], env=daemon.env,
                                   stderr=subprocess.DEVNULL)
    st = daemon.wait_ready()
    assert [c["id"] for c in st["containers"]] == ["c1"]
    p, reply, _ = ask(sock, tree.framework, "ls -la")
    p.kill()
    p.wait()
    assert reply["ok"] and reply["call"] == 1 and reply["category"] == "file_ops"
    assert request(daemon.ctl, {"op": "unregister", "id": "c1"})["summary"]["calls"] >= 0
