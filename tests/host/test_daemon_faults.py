"""agentshimd under faults, for real (a daemon process, real cgroups standing in for a
container's): a kill -9 mid-call leaves no orphan call cgroup that blocks later calls; a full
state directory costs records, never management; a call whose process outlives its end stays
under the ladder until its cgroup is empty (issue 15 rows 11, 8, 5)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentshim.enforce.eventlog import Appender, read_jsonl
from tests.daemon_support import (
    Daemon,
    end_call,
    fill_fs,
    register,
    start_call,
    start_daemon,
    tmpfs,
    wait_for,
)
from tests.podman_support import call_dirs

POLICY = "memory: {total: 1G}\n"


@pytest.fixture
def daemon(tmp_path, layout) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = start_daemon(tmp_path, bpf=False)
    yield d
    assert d.stop() == 0


@pytest.mark.parametrize("persisted", [True, False], ids=["call-persisted", "kill-before-persist"])
def test_kill_9_mid_call_leaves_no_orphan_call_cgroup(daemon, scratch, persisted):
    tree, sock = register(daemon, scratch, "c1", POLICY)
    state = daemon.state / "containers" / "c1.json"
    registered = state.read_bytes()
    orphan = start_call(sock, tree.framework, "sleep 600")
    assert orphan.reply["ok"] and orphan.reply["call"] == 1, orphan.reply
    wait_for(lambda: b'"1"' in state.read_bytes(), what="the call to be persisted")
    daemon.restart(kill=True) if persisted else _kill_before_persist(daemon, state, registered)
    after = start_call(sock, tree.framework, "true", wait="exit")
    assert after.reply["ok"], after.reply
    assert f"/tools/call-{after.seq}" in after.where
    if persisted:  # the old call is known: adopted, it stays managed
        assert orphan.proc.poll() is None and after.seq == 2
    else:  # unknown to the daemon: killed, its cgroup removed
        wait_for(lambda: orphan.proc.poll() is not None, what="the orphan call to be killed")
    after.proc.wait(timeout=10)
    orphan.stop()
    wait_for(lambda: call_dirs(tree.root) == [], what="every call cgroup to be removed",
             timeout_s=30)


def _kill_before_persist(daemon: Daemon, state, registered: bytes) -> None:
    """kill -9 landing between the start reply and its persist: the state on disk is the
    one written at registration (the call made its cgroup, nothing recorded it)."""
    daemon.proc.kill()
    daemon.proc.wait(timeout=15)
    tmp = state.with_suffix(".restore")
    tmp.write_bytes(registered)
    shutil.move(tmp, state)
    daemon.restart()


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs where the daemon's state directory goes (tmp_path/state)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with tmpfs(tmp_path / "state") as state:
        yield state


def test_a_full_state_directory_drops_records_and_calls_stay_managed(small_state, tmp_path,
                                                                     scratch):
    d = start_daemon(tmp_path)
    try:
        tree, sock = register(d, scratch, "c1", POLICY)
        filler = fill_fs(small_state)
        for _ in range(3):
            c = start_call(sock, tree.framework, "echo hi", wait="exit")
            assert c.reply["ok"], c.reply  # old code: internal error, the call unmanaged
            assert f"/tools/call-{c.seq}" in c.where
            c.proc.wait(timeout=10)
            assert end_call(sock, tree.framework, c.seq, 0)["ok"]
        st = d.status()
        assert st["dropped_log_lines"] >= 6, st  # call_start, call_end, record per call
        assert any("dropped" in w for w in st["warnings"]), st["warnings"]
        wait_for(lambda: call_dirs(tree.root) == [], what="the calls' cgroups to be removed")
        tree2, _ = register(d, scratch.child("second"), "c2", POLICY)  # a new container too
        assert "c2" in [x["id"] for x in d.status()["containers"]]
        filler.unlink()  # space again: records are written again
        c = start_call(sock, tree.framework, "echo back", wait="exit")
        c.proc.wait(timeout=10)
        assert end_call(sock, tree.framework, c.seq, 0)["ok"]
        recs = read_jsonl(small_state / "calls" / "c1.jsonl")
        assert [r["command"] for r in recs][-1:] == ["echo back"], recs
        json.loads(small_state.joinpath("containers", "c1.json").read_text())  # whole
    finally:
        assert d.stop() == 0
    assert "Traceback" not in d.log.read_text(), d.log.read_text()[-3000:]


def test_jsonl_files_rotate_at_their_size_keeping_one_old(tmp_path):
    app = Appender(rotate_bytes=1000)
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"n": i, "pad": "x" * 80}) + "\n" for i in range(40)]
    for line in lines:
        assert app.append(path, line)
    old = path.with_name("c.jsonl.1")
    assert path.stat().st_size <= 1000 and old.stat().st_size <= 1000
    kept = read_jsonl(old) + read_jsonl(path)
    assert [r["n"] for r in kept] == list(range(40 - len(kept), 40))  # newest, in order
    assert len(kept) >= 10 and not list(tmp_path.glob("c.jsonl.2"))


def test_a_call_that_outlives_its_end_stays_under_the_ladder_then_goes(daemon, scratch):
    tree, sock = register(daemon, scratch, "c1",
                          "memory: {total: 1G, tool_default: 64M}\nfreeze_timeout: 2s\n")
    # `cmd &`: the call's process keeps going over its budget after the wrapper's end
    call = start_call(sock, tree.framework, "python big.py &", mb=240, step_mb=8)
    try:
        end = end_call(sock, tree.framework, call.seq, 0)
        assert end["ok"], end
        assert daemon.records("c1")[-1]["lingering"] is True
        assert call.proc.poll() is None, "it was meant to outlive the end report"
        st = daemon.status()["containers"][0]
        assert (st["active_calls"], st["lingering_calls"]) == (0, 1), st
        wait_for(lambda: call.proc.poll() is not None, timeout_s=40,
                 what="the lingering call to be killed by the ladder (frozen, then killed)")
        assert call.proc.returncode == -9
        kinds = [(e["action"], e["call"]) for e in daemon.events("c1")]
        assert ("freeze", call.seq) in kinds and ("kill", call.seq) in kinds, kinds
        wait_for(lambda: ("call_gone", call.seq) in
                 [(e["action"], e["call"]) for e in daemon.events("c1")],
                 what="the call to be retired")
        wait_for(lambda: call_dirs(tree.root) == [], what="its cgroup to be removed")
        st = daemon.status()["containers"][0]
        assert (st["active_calls"], st["lingering_calls"]) == (0, 0), st
        assert len(daemon.records("c1")) == 1  # one record: written at its end
    finally:
        call.stop()
