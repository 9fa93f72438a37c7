"""agentshimd under faults, for real (a daemon process, real cgroups standing in for a
container's): a kill -9 mid-call leaves no orphan call cgroup that blocks later calls (issue 15
row 11)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.daemon_support import Daemon, register, start_call, start_daemon, wait_for
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
