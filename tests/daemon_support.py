"""A private agentshimd for tests, real cgroups standing in for containers, and real processes
speaking the wrapper's protocol (start a call, allocate, end) from Python."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentshim.cgroups import Cgroup, ContainerTree, TreeBudget
from agentshim.protocol import DaemonUnavailable, request

CALLER = r"""
import json, os, socket, sys, time
sock, intent, cmd, mb, step_mb, step_ms, wait = sys.argv[1:8]
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
s.sendall((json.dumps({"op": "start", "argv": ["bash", "-c", cmd], "cwd": "/w",
                       "intent": intent}) + "\n").encode())
replies = s.makefile()
while True:  # admission's interim lines first, as the wrapper reads them
    line = replies.readline().strip()
    if not line.startswith("{") or "wait_ms" not in line or '"call"' in line:
        break
    print("hold " + line, flush=True)
print(line, flush=True)
print(open("/proc/self/cgroup").read().replace("\n", "|"), flush=True)
chunks, done = [], 0
while done < int(mb):
    n = min(int(step_mb), int(mb) - done)
    chunks.append(b"\x5a" * (n << 20))
    done += n
    print(f"allocated {done} {time.time():.6f}", flush=True)
    time.sleep(float(step_ms) / 1000)
print("done", flush=True)
if wait == "stdin":
    sys.stdin.read(1)
"""

ENDER = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((json.dumps({"op": "end", "call": int(sys.argv[2]), "status": int(sys.argv[3])})
           + "\n").encode())
print(s.makefile().readline().strip())
"""


@dataclass
class Daemon:
    """A running private agentshimd."""

    proc: subprocess.Popen
    run: Path
    state: Path
    env: dict[str, str]
    log: Path

    @property
    def ctl(self) -> Path:
        return self.run / "agentshimd.sock"

    def status(self) -> dict[str, Any]:
        return request(self.ctl, {"op": "status"}, timeout_s=2)

    def wait_ready(self, timeout_s: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.status()
            except DaemonUnavailable:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("agentshimd did not come up:\n"
                                         + self.log.read_text()) from None
                time.sleep(0.05)

    def wait_bpf(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until the BPF programs are loaded (or known unavailable); the status."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.status()["enforcer"]
            if st["bpf"] != "loading" or time.monotonic() > deadline:
                return st
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)

    def restart(self, kill: bool = False) -> dict[str, Any]:
        """Stop the daemon (SIGKILL with kill=True: nothing of it runs after), start it again
        with the same directories; its status once ready."""
        if kill:
            self.proc.kill()
            self.proc.wait(timeout=15)
        else:
            self.stop()
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "agentshim.daemon"],
                                         env=self.env, stderr=f)
        return self.wait_ready()

    def events(self, cid: str) -> list[dict[str, Any]]:
        path = self.state / "events" / f"{cid}.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]

    def records(self, cid: str) -> list[dict[str, Any]]:
        path = self.state / "calls" / f"{cid}.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def start_daemon(tmp: Path, bpf: bool = False, extra_env: dict[str, str] | None = None,
                 fd_limit: int | None = None) -> Daemon:
    """Start agentshimd with private run/state dirs under tmp (with fd_limit: its
    RLIMIT_NOFILE, soft and hard)."""
    # swap policy "bound" unless a test asks otherwise: the ladder's tests keep their meaning
    # on a host with swap (setup-host.sh turns zram on); test_offload.py tests "page"
    env = dict(os.environ, AGENTSHIM_RUN_DIR=str(tmp / "run"),
               AGENTSHIM_STATE_DIR=str(tmp / "state"), AGENTSHIM_BPF="1" if bpf else "0",
               **{"AGENTSHIM_SWAP_POLICY": "bound", **(extra_env or {})})
    log = tmp / "daemon.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "agentshim.daemon"], env=env, stderr=f,
                                preexec_fn=None if fd_limit is None else _limit_fds(fd_limit))
    d = Daemon(proc, tmp / "run", tmp / "state", env, log)
    d.wait_ready()
    return d


def _limit_fds(n: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


def open_fds(pid: int) -> int:
    """How many file descriptors pid holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    """How many threads pid runs."""
    return len(os.listdir(f"/proc/{pid}/task"))


def register(daemon: Daemon, cg: Cgroup, cid: str, policy: str,
             budget: TreeBudget | None = None) -> tuple[ContainerTree, Path]:
    """Build the tree in cg (as prestart does) and register it; (tree, broker socket)."""
    cg.create(exist_ok=True)
    if cg.layout.mode == "v2":  # the container's memory files need it (podman does the same)
        cg.parent().enable_controllers()
    tree = ContainerTree(cg)
    tree.build(budget or TreeBudget())
    reply = request(daemon.ctl, {"op": "register", "id": cid, "pid": os.getpid(),
                                 "slot": f"slot-{cid}",
                                 "cgroup": {k: str(v) for k, v in cg.dirs.items()},
                                 "policy_yaml": policy})
    assert reply["ok"], reply
    return tree, Path(reply["socket"])


@dataclass
class Call:
    """A real process that starts a tool call from a cgroup, allocates, then waits or exits."""

    proc: subprocess.Popen
    reply: dict[str, Any]
    where: str
    lines: list[str] = field(default_factory=list)
    holds: list[dict[str, Any]] = field(default_factory=list)  # admission's interim lines
    _buf: bytes = b""

    def await_reply(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait for the broker's final reply to the start (after any interim lines)."""
        deadline = time.monotonic() + timeout_s
        while not self.reply:
            for i, x in enumerate(self.lines):
                if x.startswith("hold "):
                    continue
                if len(self.lines) > i + 1:
                    self.holds = [json.loads(h[5:]) for h in self.lines[:i]]
                    self.reply, self.where = json.loads(x), self.lines[i + 1]
                    self.lines = self.lines[i + 2:]
                    return self.reply
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no reply to the start within {timeout_s} s")
            if not self._pump(min(left, 0.2)) and not self.reply:
                raise AssertionError("the call process ended before it was answered: "
                                     f"{self.lines}")
        return self.reply

    def held(self) -> bool:
        """True once admission has told this call to wait (an interim line arrived)."""
        self._pump(0)
        return any(x.startswith("hold ") for x in self.lines) or bool(self.holds)

    @property
    def seq(self) -> int:
        return int(self.reply["call"])

    def _pump(self, timeout_s: float) -> bool:
        """Move whatever the process wrote (waiting up to timeout_s) into self.lines; False
        at EOF. Reads the raw fd: a buffered reader would hide lines from select()."""
        import select
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], timeout_s)[0]:
            return True
        data = os.read(fd, 65536)
        if not data:
            return False
        self._buf += data
        *done, self._buf = self._buf.split(b"\n")
        self.lines += [x.decode().strip() for x in done]
        return True

    def read_until(self, prefix: str, timeout_s: float = 30.0) -> str | None:
        """Wait for an output line starting with prefix (None at EOF)."""
        deadline = time.monotonic() + timeout_s
        while True:
            hit = next((x for x in self.lines if x.startswith(prefix)), None)
            if hit is not None:
                return hit
            if time.monotonic() > deadline:
                raise AssertionError(f"no {prefix!r} within {timeout_s} s; "
                                     f"got {self.lines[-3:]}")
            if not self._pump(0.2):
                return None

    def drain(self) -> None:
        """Read every output line available now."""
        import select
        assert self.proc.stdout is not None
        while select.select([self.proc.stdout.fileno()], [], [], 0.05)[0]:
            if not self._pump(0):
                return

    def allocated_mb(self) -> int:
        """MB allocated so far, from the lines read (call drain() first for the latest)."""
        got = [int(x.split()[1]) for x in self.lines if x.startswith("allocated")]
        return max(got, default=0)

    def release(self) -> None:
        """Let a call waiting on stdin exit."""
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("x")
            self.proc.stdin.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def start_call(sock: Path, cg: Cgroup, cmd: str, mb: int = 0, step_mb: int = 16,
               step_ms: float = 0.0, intent: str = "", wait: str = "stdin",
               answered: bool = True) -> Call:
    """Start a call from a process moved into cg first (as a container process would be).
    With answered=False it returns at once; Call.await_reply() waits for the answer."""
    p = subprocess.Popen(
        [sys.executable, "-c", CALLER, str(sock), intent, cmd, str(mb), str(step_mb),
         str(step_ms), wait],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: cg.move(os.getpid()))
    c = Call(p, {}, "")
    if answered:
        c.await_reply()
    return c


def end_call(sock: Path, cg: Cgroup, seq: int, status: int) -> dict[str, Any]:
    """Report a call's end from a process in cg (the wrapper's parent, in framework/)."""
    out = subprocess.run([sys.executable, "-c", ENDER, str(sock), str(seq), str(status)],
                         capture_output=True, text=True, timeout=30, check=True,
                         preexec_fn=lambda: cg.move(os.getpid()))
    return json.loads(out.stdout)


@contextlib.contextmanager
def tmpfs(at: Path, size: str = "2m"):
    """A tmpfs of `size` mounted at the directory `at` (made if missing) while the block runs."""
    at.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(at)], check=True)
    try:
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)], check=True)


def fill_fs(fs: Path) -> Path:
    """Fill the filesystem holding directory fs to its last byte; the file that does it
    (incompressible data: no filesystem gets it for free)."""
    import errno

    filler = fs / "filler"
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(os.urandom(4096))
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return filler


def wait_for(pred, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition"):
    """Poll pred() until truthy; its value, or AssertionError naming what was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval_s)
