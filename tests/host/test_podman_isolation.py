"""Through container A's broker socket, no process of container B can be moved or learned about.

The worst case is made on purpose: A's socket directory is bind-mounted into B, so B's processes
(and a process on the host) can talk to A's broker. agentshimd only ever acts on the connecting
process (SO_PEERCRED), and only when it lives in A's tree. Real podman with runc on this host.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from agentshim.cgroups import Cgroup, ContainerTree, detect_layout
from tests.daemon_support import wait_for
from tests.podman_support import PY_IMAGE, agentshim_fixture, container_cgroup, run_container

# Speaks the broker protocol from inside a container (or the host): every request on its own
# connection, the replies and the asker's /proc/self/cgroup before and after, as JSON.
ASKER = r"""
import json, os, socket, sys
sock = sys.argv[1]
victim = int(sys.argv[2])
def ask(obj, raw=None):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(raw if raw is not None else (json.dumps(obj) + "\n").encode())
    line = s.makefile("rb").readline()
    s.close()
    return line.decode()
before = open("/proc/self/cgroup").read()
replies = [
    ask({"op": "start", "argv": ["bash", "-c", "true"], "cwd": "/", "intent": "",
         "ppid": victim, "pid": victim}),
    ask({"op": "end", "call": 1, "status": 0, "pid": victim}),
    ask({"op": "end", "call": 2, "status": 0}),
    ask({"op": "status"}),
    ask({"op": "register", "id": "x", "pid": victim, "slot": "s", "cgroup": {"memory": "/"}}),
    ask({"op": "unregister", "id": "x"}),
    ask(None, raw=b"not json\n"),
]
after = open("/proc/self/cgroup").read()
print(json.dumps({"replies": replies, "before": before, "after": after, "pid": os.getpid()}))
"""


# A process of A naming B's agent in every field of a start, then ending its own call.
A_ASKER = r"""
import json, socket, sys
victim = int(sys.argv[1])
def ask(obj):
    s = socket.socket(socket.AF_UNIX)
    s.connect("/run/agentshim/broker.sock")
    s.sendall((json.dumps(obj) + "\n").encode())
    return json.loads(s.makefile("rb").readline())
start = ask({"op": "start", "argv": ["bash", "-c", "x"], "ppid": victim, "pid": victim})
where = open("/proc/self/cgroup").read()
end = ask({"op": "end", "call": start["call"], "status": 0})
print(json.dumps({"start": start, "where": where, "end": end}))
"""


ash = agentshim_fixture("ashim-iso", python=True)


def active_calls(ash, cid: str) -> int:
    return next(x["active_calls"] for x in ash.status()["containers"] if x["id"] == cid)


def assert_leaks_nothing(replies: list[str], secrets: list[str]) -> None:
    """Each reply is a refusal with a fixed reason that names no pid, path or id."""
    for line in replies:
        reply = json.loads(line)
        assert set(reply) == {"ok", "error"} and reply["ok"] is False, line
        for s in secrets:
            assert s not in reply["error"], (s, reply)
        assert not re.search(r"\d{2,}", reply["error"]), reply  # no pid or number in it


def test_another_container_cannot_move_or_query_through_a_foreign_socket(ash):
    a = run_container(ash.hooked, ash.name(), "--annotation", "io.agentshim.enable=true",
                      image=PY_IMAGE)
    a_root = container_cgroup(a.pid())
    a_tree = ContainerTree(a_root)
    a_slot = ash.slot_dir(a.id)
    # A has a tool call running: call 1
    subprocess.run([*a.podman.base, "exec", "-d", a.name, "bash", "-c", "sleep 120"], check=True)
    deadline = time.monotonic() + 10
    while active_calls(ash, a.id) != 1:
        assert time.monotonic() < deadline, "A's call never started"
        time.sleep(0.05)
    a_calls = [c.name for c in a_tree.calls()]
    assert a_calls == ["call-1"]

    b = run_container(ash.hooked, ash.name(), "--annotation", "io.agentshim.enable=true",
                      "-v", f"{a_slot}:/other", image=PY_IMAGE)
    b_pid = b.pid()
    b_where = Cgroup.of_pid(detect_layout(), b_pid)
    layout = detect_layout()
    secrets = [a.id[:12], b.id[:12], "libpod", "/sys/fs/cgroup", str(b_pid), str(a.pid())]

    # 1. B's own process, speaking the protocol on A's socket, naming B's agent everywhere
    r = b.exec("python3", "-c", ASKER, "/other/broker.sock", str(b_pid), check=True)
    out = json.loads(r.stdout)
    assert_leaks_nothing(out["replies"], secrets)
    assert json.loads(out["replies"][0])["error"] == "peer is not a process of this container"
    assert out["before"] == out["after"], "the asker was moved"
    assert "/tools/" not in out["after"]

    # 2. the wrapper in B pointed at A's socket: refused, runs unmanaged where it was
    r = b.exec("bash", "-c", "cat /proc/self/cgroup",
               env={"AGENTSHIM_SOCKET": "/other/broker.sock"})
    assert r.returncode == 0
    assert r.stderr == ("agentshim: running unmanaged (broker refused: peer is not a process "
                        "of this container)\n")
    assert "/tools/" not in r.stdout and a.id not in r.stdout

    # 3. a process on the host
    host = subprocess.run([sys.executable, "-c", ASKER, str(a_slot / "broker.sock"),
                           str(b_pid)], capture_output=True, text=True, check=True)
    out = json.loads(host.stdout)
    assert_leaks_nothing(out["replies"], secrets)
    assert out["before"] == out["after"]

    # 4. A's own process naming B's agent pid in every field: only A's asker is moved
    r = a.exec("python3", "-c", A_ASKER, str(b_pid), check=True)
    out = json.loads(r.stdout)
    assert out["start"]["ok"] is True and out["start"]["call"] == 2
    assert "/tools/call-2" in out["where"], "A's asker itself is what moves"
    assert out["end"]["ok"] is True

    # nothing of B moved, nothing of A changed by B
    assert Cgroup.of_pid(layout, b_pid) == b_where and b_where.name == "framework"
    assert ContainerTree(container_cgroup(b_pid)).calls() == []
    assert ash.records(b.id) == []
    # A: call 1 is still running (B's `end` of it was refused); call 2 was ended by A itself
    assert active_calls(ash, a.id) == 1
    assert [x["call"] for x in ash.records(a.id)] == [2]
    # call-2's asker reported its own end from inside it: its cgroup stays under the ladder
    # until its last process is gone, then the reaper removes it; call-1 is untouched
    wait_for(lambda: [c.name for c in a_tree.calls()] == ["call-1"], timeout_s=20,
             what="call-2's cgroup to go once its asker exited")
    a.rm()
    b.rm()
