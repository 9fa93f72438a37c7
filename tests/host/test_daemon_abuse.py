"""One container flooding its broker socket affects no other container, and agentshimd
survives running out of file descriptors (issue 15 rows 2, 3 and 7). A real daemon process,
real cgroups standing in for two containers, real sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import pytest

from agentshim.cgroups import ContainerTree
from tests import daemon_support as support
from tests.daemon_support import open_fds, start_call, start_daemon, threads, wait_for

POLICY = "memory: {total: 2G}\n"


@pytest.fixture
def make_daemon(tmp_path, layout):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made = []

    def make(**kw):
        d = start_daemon(tmp_path, bpf=False, **kw)
        made.append(d)
        return d
    yield make
    for d in made:
        assert d.stop() == 0


def two_containers(daemon, scratch):
    a_cg, b_cg = scratch.child("a"), scratch.child("b")
    a, a_sock = support.register(daemon, a_cg, "ctr-a", POLICY)
    b, b_sock = support.register(daemon, b_cg, "ctr-b", POLICY)
    return (a, a_sock), (b, b_sock)


def call_works(tree: ContainerTree, sock) -> bool:
    try:
        c = start_call(sock, tree.framework, "true")
    except (AssertionError, ValueError):  # no answer at all: the connection was shed
        return False
    try:
        return bool(c.reply.get("ok"))
    finally:
        c.release()
        c.proc.wait(timeout=10)


def flood(sock, n: int, payload: bytes = b"") -> list[socket.socket]:
    """n connections that send payload (no newline) and then hold still."""
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(sock))
            if payload:
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.send(payload)
        except OSError:
            s.close()
            continue
        conns.append(s)
    return conns


def reply_of(s: socket.socket, timeout_s: float = 3.0) -> bytes:
    s.setblocking(True)
    s.settimeout(timeout_s)
    try:
        return s.recv(4096)
    except (TimeoutError, OSError):
        return b""


def test_out_of_fds_the_daemon_sheds_connections_and_serves_again(make_daemon, scratch):
    daemon = make_daemon(fd_limit=96)
    (a, a_sock), (b, b_sock) = two_containers(daemon, scratch)
    # both containers hold connections open: together past the daemon's fds, each under its cap
    held = flood(a_sock, 60) + flood(b_sock, 60)
    wait_for(lambda: "shedding connections" in daemon.log.read_text(),
             what="the daemon to run out of fds")
    for s in held:
        s.close()
    # the accept thread lives on: both containers are served again, and status says what was
    assert wait_for(lambda: call_works(b, b_sock), what="B's calls to be served again")
    assert call_works(a, a_sock)
    st = daemon.status()
    assert st["accepting"]["alive"] and st["accepting"]["exhausted"] > 0
    assert any("file descriptors" in w for w in st["warnings"]), st["warnings"]


def test_a_flooding_container_is_capped_and_the_other_is_served(make_daemon, scratch):
    daemon = make_daemon()
    (a, a_sock), (b, b_sock) = two_containers(daemon, scratch)
    held = flood(a_sock, 100)  # half-open: connected, nothing sent
    try:
        refused = [r for s in held[64:] if (r := reply_of(s))]
        assert refused and all(b"too many connections" in r for r in refused), refused[:2]
        t0 = time.monotonic()
        assert call_works(b, b_sock)
        assert time.monotonic() - t0 < 5  # not behind A's 5 s request timeouts
        assert daemon.status()["accepting"]["refused"] >= len(refused)
    finally:
        for s in held:
            s.close()
    assert wait_for(lambda: call_works(a, a_sock), what="A to be served after its flood")


def test_request_bytes_of_one_container_are_bounded(make_daemon, scratch):
    daemon = make_daemon()
    (a, a_sock), (b, b_sock) = two_containers(daemon, scratch)
    rss0 = _rss(daemon.proc.pid)
    chunk = b"x" * (1 << 20)
    held = []
    try:
        for _ in range(40):  # 40 MB offered without a newline
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(a_sock))
            s.settimeout(2)
            with contextlib.suppress(OSError):
                s.sendall(chunk)
            held.append(s)
        replies = [reply_of(s, 5) for s in held]
        assert any(b"too many request bytes" in r for r in replies)
        assert _rss(daemon.proc.pid) - rss0 < 64 << 20
        assert call_works(b, b_sock)
    finally:
        for s in held:
            s.close()


def test_no_thread_or_fd_is_left_per_container(make_daemon, scratch):
    daemon = make_daemon()
    pid = daemon.proc.pid
    fds0, threads0 = open_fds(pid), threads(pid)
    from agentshim.protocol import request
    for i in range(20):
        tree, sock = support.register(daemon, scratch.child(f"c{i}"), f"ctr-{i}", POLICY)
        assert call_works(tree, sock)
        assert request(daemon.ctl, {"op": "unregister", "id": f"ctr-{i}"})["ok"]
    wait_for(lambda: threads(pid) <= threads0, what="the daemon's threads back to baseline")
    assert open_fds(pid) <= fds0 + 2


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
