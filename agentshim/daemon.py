"""agentshimd: one per host. Owns the container registry and one broker socket per container.

    agentshimd [--log-level info]

Sockets (paths from agentshim.paths, movable with AGENTSHIM_RUN_DIR / AGENTSHIM_STATE_DIR):
  <run>/agentshimd.sock            control, root only: register / unregister / status
  <run>/slots/<slot>/broker.sock   per container, bind-mounted into it at /run/agentshim:
                                   start / end of tool calls (docs/wrapper.md)
State lives in <state>/containers/*.json, so a restarted daemon picks up running containers;
per-call records are appended to <state>/calls/<container>.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agentshim import hooks, paths
from agentshim.acceptor import Acceptor, ByteBudget
from agentshim.broker import AFTER_REPLY, Broker, ManagedContainer, Refused, proc_start_time
from agentshim.cgroups import CALL_PREFIX, CgroupError, detect_layout
from agentshim.enforce.enforcer import Enforcer
from agentshim.enforce.eventlog import read_jsonl
from agentshim.policy import PolicyInvalid
from agentshim.protocol import ProtocolError, decode, encode, peer_cred, read_line

log = logging.getLogger("agentshimd")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
REQUEST_TIMEOUT_S = 5.0


def listen(path: Path, mode: int) -> socket.socket:
    """A listening unix socket at path (an old socket file is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.bind(str(path))
    os.chmod(path, mode)
    s.listen(64)
    return s


class Daemon:
    """The registry, the sockets and the threads serving them."""

    def __init__(self) -> None:
        self.layout = detect_layout()
        self.state_dir = paths.state_dir()
        self.broker = Broker(self.layout, self.state_dir)
        self.enforcer = Enforcer(self.broker, self.broker.events,
                                 use_bpf=os.environ.get("AGENTSHIM_BPF", "1") != "0")
        self.broker.enforcer = self.enforcer
        self.containers: dict[str, ManagedContainer] = {}
        self.sockets: dict[str, socket.socket] = {}
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._lockfile: Any = None
        self.acceptor = Acceptor(self._handle, _refuse)

    # --- lifetime ---------------------------------------------------------------------------
    def acquire_singleton(self) -> None:
        """Refuse to run twice on one host (flock on <run>/agentshimd.lock)."""
        run = paths.run_dir()
        run.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._lockfile = open(run / "agentshimd.lock", "w")  # noqa: SIM115 (held for life)
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit("agentshimd: already running (lock "
                             f"{run / 'agentshimd.lock'} is held)") from None
        self._lockfile.write(str(os.getpid()))
        self._lockfile.flush()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT."""
        self.acquire_singleton()
        raise_fd_limit()
        self.acceptor.start()
        self.enforcer.start()
        for ctr in self.broker.load_all():
            self._adopt(ctr)
        ctl = listen(paths.control_socket(), 0o600)
        self.acceptor.add(ctl, None)
        threading.Thread(target=self._reaper, daemon=True, name="reaper").start()
        log.info("agentshimd %d ready: control %s, %d container(s) adopted, cgroups %s",
                 os.getpid(), paths.control_socket(), len(self.containers), self.layout.mode)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        while not self.stopping.wait(0.5):
            pass
        log.info("agentshimd stopping (state kept in %s)", self.state_dir)
        self.acceptor.remove(ctl)
        with contextlib.suppress(FileNotFoundError):
            paths.control_socket().unlink()
        for s in list(self.sockets.values()):
            self.acceptor.remove(s)
        self.acceptor.stop()
        self.enforcer.stop()
        return 0

    def _adopt(self, ctr: ManagedContainer) -> None:
        """Take over a container persisted by an earlier daemon, if it still runs."""
        if ctr.pid_start is None:  # persisted by a daemon that did not record it
            ctr.pid_start = proc_start_time(ctr.pid)
        if not ctr.alive():
            with self.lock:
                self.containers[ctr.id] = ctr
            self._gone(ctr)
            return
        for call in ctr.calls.values():
            call.empty_since = None
            call.at_budget_since = None
        self._orphan_calls(ctr)
        self._serve_container(ctr)
        self.enforcer.add_container(ctr)

    def _orphan_calls(self, ctr: ManagedContainer) -> None:
        """Call cgroups an earlier daemon left without a record (killed between making one
        and persisting it): killed and removed, and numbers are never reused, so the next
        call does not meet an old directory (in any hierarchy)."""
        tree = self.broker.tree(ctr)
        seqs = set()
        for d in tree.tools.dirs.values():
            with contextlib.suppress(OSError):
                names = [p.name.removeprefix(CALL_PREFIX) for p in d.glob(CALL_PREFIX + "*")]
                seqs |= {int(n) for n in names if n.isdigit()}
        for seq in sorted(seqs - set(ctr.calls)):
            log.info("%s: removing call %d, unknown to this daemon", ctr.id[:12], seq)
            try:
                tree.remove_call(seq, kill=True)
            except CgroupError as e:
                log.warning("%s: cannot remove orphan call %d: %s", ctr.id[:12], seq, e)
        if seqs and max(seqs) >= ctr.next_seq:
            ctr.next_seq = max(seqs) + 1
            with contextlib.suppress(OSError):
                self.broker.persist(ctr)

    def _serve_container(self, ctr: ManagedContainer) -> None:
        sock_path = paths.slots_dir() / ctr.slot / "broker.sock"
        s = listen(sock_path, 0o666)
        with self.lock:
            old = self.sockets.pop(ctr.id, None)
            self.containers[ctr.id] = ctr
            self.sockets[ctr.id] = s
        if old is not None:
            self.acceptor.remove(old)
        self.acceptor.add(s, ctr.id)

    # --- sockets ----------------------------------------------------------------------------
    def _handle(self, conn: socket.socket, container_id: str | None,
                budget: ByteBudget) -> None:
        with conn:
            try:
                pid, uid, _gid = peer_cred(conn)
                req = decode(read_line(conn, REQUEST_TIMEOUT_S, budget=budget))
                if container_id is None:
                    reply = self._control(uid, req)
                else:
                    reply = self._broker_request(container_id, pid, req, WaitingCaller(conn))
            except Refused as e:
                reply = {"ok": False, "error": str(e)}
            except ProtocolError as e:
                reply = {"ok": False, "error": f"bad request: {e}"}
            except Exception as e:  # a daemon bug must not hang the agent: answer and log
                log.exception("request failed")
                reply = {"ok": False, "error": f"internal error: {e}"}
            after = reply.pop(AFTER_REPLY, None) or []
            with contextlib.suppress(OSError):
                conn.sendall(encode(reply))
        for work in after:
            try:
                work()
            except Exception:
                log.exception("work after the reply failed")

    def _broker_request(self, container_id: str, pid: int, req: dict[str, Any],
                        caller: WaitingCaller) -> dict[str, Any]:
        ctr = self.containers.get(container_id)
        if ctr is None:
            raise Refused("container is not registered")
        op = req.get("op")
        if op == "start":
            reply = self.broker.start(ctr, pid, req, caller)
            log.info("%s call %s start: %s", ctr.id[:12], reply.get("call"),
                     reply.get("category"))
            return reply
        if op == "end":
            return self.broker.end(ctr, pid, req)
        raise Refused(f"unknown op {op!r} (expected start or end)")

    # --- control ----------------------------------------------------------------------------
    def _control(self, uid: int, req: dict[str, Any]) -> dict[str, Any]:
        if uid != 0:
            raise Refused("the control socket is for root only")
        op = req.get("op")
        if op == "register":
            return self._register(req)
        if op == "unregister":
            return self._unregister(str(req.get("id", "")))
        if op == "status":
            with self.lock:
                accepting = self.acceptor.status()
                return {"ok": True, "pid": os.getpid(), "cgroups": self.layout.mode,
                        "enforcer": self.enforcer.status(), "accepting": accepting,
                        "waiting_calls": self.broker.room.waiting(),
                        "dropped_log_lines": self.broker.events.appender.dropped,
                        "warnings": status_warnings(accepting)
                        + self._log_warnings(), "containers": [
                    {"id": c.id, "pid": c.pid, "slot": c.slot,
                     "active_calls": sum(1 for x in c.calls.values() if not x.recorded),
                     "lingering_calls": sum(1 for x in c.calls.values() if x.recorded),
                     "frozen_calls": sum(1 for x in c.calls.values()
                                         if x.frozen_since is not None),
                     "next_call": c.next_seq} for c in self.containers.values()]}
        raise Refused(f"unknown op {op!r} (expected register, unregister or status)")

    def _log_warnings(self) -> list[str]:
        app = self.broker.events.appender
        return [f"{app.dropped} event/record line(s) dropped ({app.last_error})"
                ] if app.dropped else []

    def _register(self, req: dict[str, Any]) -> dict[str, Any]:
        cid, slot = str(req.get("id", "")), str(req.get("slot", ""))
        if not SAFE_NAME.match(cid) or not SAFE_NAME.match(slot):
            raise Refused("register needs a safe container id and slot name")
        cgroup = req.get("cgroup")
        if not isinstance(cgroup, dict) or not cgroup:
            raise Refused("register needs the container's cgroup directories")
        ctr = ManagedContainer(id=cid, slot=slot, pid=int(req.get("pid", 0)),
                               cgroup={str(k): str(v) for k, v in cgroup.items()},
                               policy_yaml=str(req.get("policy_yaml", "")))
        ctr.pid_start = proc_start_time(ctr.pid)
        try:
            self.broker.policy(ctr)  # refuse a bad policy here, not at the first call
        except PolicyInvalid as e:
            raise Refused(str(e)) from e
        self.broker.persist(ctr)
        self._serve_container(ctr)
        self.enforcer.add_container(ctr)
        log.info("registered %s (pid %d, slot %s)", cid[:12], ctr.pid, slot)
        return {"ok": True, "socket": str(paths.slots_dir() / slot / "broker.sock")}

    def _unregister(self, cid: str) -> dict[str, Any]:
        with self.lock:
            ctr = self.containers.pop(cid, None)
            s = self.sockets.pop(cid, None)
        if s is not None:
            self.acceptor.remove(s)
        self.acceptor.forget(cid)
        if ctr is None:
            return {"ok": True, "summary": None}
        self.enforcer.remove_container(ctr)
        summary = self._finish_container(ctr)
        log.info("unregistered %s: %d call(s)", cid[:12], summary["calls"])
        return {"ok": True, "summary": summary}

    def _finish_container(self, ctr: ManagedContainer) -> dict[str, Any]:
        # calls are written off here: a frozen one must be let go (poststop kills the tree)
        for call in list(ctr.calls.values()):
            if call.recorded:  # its record is written: only its lingering processes are left
                self.broker.retire(ctr, call)
                continue
            call.ended_at = call.ended_at or time.time()
            self.broker.finish(ctr, call, exit_status=None, reason="container_stopped")
        summary = summarize(self.state_dir / "calls" / f"{ctr.id}.jsonl", ctr.id)
        out = self.state_dir / "summaries"
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{ctr.id}.json").write_text(json.dumps(summary, indent=1))
        except OSError as e:  # the state directory is full: the records still say it all
            log.warning("cannot write the summary of %s: %s", ctr.id[:12], e)
        self.broker.forget(ctr)
        return summary

    def _gone(self, ctr: ManagedContainer) -> None:
        """The container's process is gone without a poststop (its start failed after
        prestart, or poststop has not run yet): the poststop teardown, done here."""
        with self.lock:
            if self.containers.get(ctr.id) is not ctr:  # unregistered (or registered anew)
                return
        log.info("container %s is gone; tearing it down", ctr.id[:12])
        hooks.teardown(ctr.id, ctr.slot, unregister=lambda cid: self._unregister_if(ctr),
                       cgroup=ctr.cgroup)

    def _unregister_if(self, ctr: ManagedContainer) -> None:
        """_unregister of ctr, unless another registration of its id replaced it."""
        with self.lock:
            if self.containers.get(ctr.id) is not ctr:
                return
        self._unregister(ctr.id)

    def _reaper(self) -> None:
        while not self.stopping.wait(0.25):
            for ctr in list(self.containers.values()):
                try:
                    if not ctr.alive():
                        self._gone(ctr)
                        continue
                    for rec in self.broker.reap(ctr):
                        log.info("%s call %s ended without a report", ctr.id[:12], rec["call"])
                except Exception:
                    log.exception("reaper failed for %s", ctr.id[:12])


class WaitingCaller:
    """The wrapper of a start request, while admission holds its call back."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def hold(self, wait_ms: int) -> None:
        """An interim line: the wrapper waits up to wait_ms more for the real reply."""
        with contextlib.suppress(OSError):
            self.conn.sendall(encode({"ok": True, "wait_ms": wait_ms}))

    def gone(self) -> bool:
        """True when the wrapper hung up (EOF or an error on the connection)."""
        p = select.poll()
        p.register(self.conn.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        if not p.poll(0):
            return False
        try:
            return self.conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def _refuse(conn: socket.socket, reason: str) -> None:
    """Answer a connection the acceptor will not serve (the wrapper runs the call unmanaged
    and says why)."""
    conn.settimeout(0.2)
    with contextlib.suppress(OSError):
        conn.sendall(encode({"ok": False, "error": reason}))


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every connection is an fd); returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def status_warnings(accepting: dict[str, Any]) -> list[str]:
    """What an operator should know from the acceptor's counters (status is not just ok)."""
    out = []
    if not accepting.get("alive"):
        out.append("the accept thread is not running: tool calls run unmanaged")
    if accepting.get("exhausted"):
        out.append(f"{accepting['exhausted']} connection(s) shed for lack of file descriptors "
                   f"({accepting.get('last_error')})")
    if accepting.get("refused"):
        out.append(f"{accepting['refused']} connection(s) refused over a container's cap")
    return out


def summarize(calls_file: Path, cid: str) -> dict[str, Any]:
    """Per-container summary from its call records."""
    recs = read_jsonl(calls_file)
    by_cat: dict[str, dict[str, Any]] = {}
    for r in recs:
        c = by_cat.setdefault(r.get("category", "other"), {"calls": 0, "peak_bytes": 0})
        c["calls"] += 1
        c["peak_bytes"] = max(c["peak_bytes"], int(r.get("peak_bytes") or 0))
    return {"container": cid, "calls": len(recs), "categories": by_cat,
            "throttled_calls": sum(1 for r in recs if r.get("throttle_events")),
            "oom_killed_calls": sum(1 for r in recs if r.get("oom_kills")),
            "frozen_calls": sum(1 for r in recs if r.get("freezes")),
            "killed_by_agentshim": sum(1 for r in recs if r.get("killed_by_agentshim")),
            "peak_bytes": max([int(r.get("peak_bytes") or 0) for r in recs] or [0])}


def main(argv: list[str] | None = None) -> int:
    """Entry point of agentshimd."""
    ap = argparse.ArgumentParser(prog="agentshimd", description=__doc__.splitlines()[0])
    ap.add_argument("--log-level", default=os.environ.get("AGENTSHIM_LOG_LEVEL", "info"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s agentshimd[%(process)d] %(levelname)s %(message)s")
    if os.geteuid() != 0:
        print("agentshimd: must run as root (it manages cgroups)", file=sys.stderr)
        return 1
    return Daemon().run()


if __name__ == "__main__":
    sys.exit(main())
