"""Soak: N containers x M tool calls through a private agentshimd, killed (-9) and restarted
in the middle.

    sudo .venv/bin/python bench/soak.py --containers 4 --calls 10000 [--no-kill] [--json out]

Containers are real cgroups registered with the daemon (tests/daemon_support.register). One
helper process per container sits in its framework/ and, as fast as it can, forks a child per
call: the child connects to the broker socket and sends `start` (agentshimd moves it into
tools/call-N), then exits; the helper sends `end`, as the wrapper does. A start that gets no
answer or a refusal (daemon down) ran unmanaged, as the wrapper fails open. At the middle call
agentshimd is killed with SIGKILL and restarted; calls go on throughout. Reported: managed /
unmanaged / failed calls, the daemon's RSS, fds and threads (after warm-up, right after the
restart, at the end), state bytes per call, leaked cgroups, calls/s and the outage length.
Exit status 1 on any failure or leak.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import arg_parser, mem_kb, parse_args, scratch_cgroup, write_json

from agentshim.cgroups import Cgroup, ContainerTree
from agentshim.protocol import DaemonUnavailable, ProtocolError, decode, encode, read_line, request
from tests.daemon_support import Daemon, open_fds, register, start_daemon, threads, wait_for

POLICY = "memory: {total: 1G, framework_protect: 16M, tool_default: 64M}\n"
WARMUP = 5  # calls per container before the measured run (not counted)
START_TIMEOUT_S = 2.0  # the wrapper's AGENTSHIM_TIMEOUT_MS default
START = {"op": "start", "argv": ["bash", "-c", "true"], "cwd": "/w", "intent": ""}


def one_call(sock: Path) -> tuple[str, int, str]:
    """One tool call as the wrapper makes it: (kind, call number, detail); kind is "managed",
    "end_lost" (managed, its end not delivered: daemon down), "unmanaged" or "failed"."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the wrapper's child: ask, then "exec" (exit) whatever the answer
        os.close(r)
        out = b""
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(START_TIMEOUT_S)
            try:
                s.connect(str(sock))
                s.sendall(encode(START))
                out = read_line(s, START_TIMEOUT_S)
            except (OSError, ProtocolError) as e:
                out = b"!" + str(e).encode()
            os.write(w, out)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    line = b"".join(chunks)
    if status != 0:
        return "failed", -1, f"child exit status {status}"
    if line.startswith(b"!") or not line:
        return "unmanaged", -1, line[1:].decode(errors="replace") or "no answer"
    try:
        reply = decode(line)
    except ProtocolError as e:
        return "failed", -1, f"bad start reply: {e}"
    seq = reply.get("call")
    if not reply.get("ok") or not isinstance(seq, int) or seq < 0:
        return "failed", -1, f"start: {reply}"
    try:
        ended = request(sock, {"op": "end", "call": seq, "status": 0}, timeout_s=START_TIMEOUT_S)
    except DaemonUnavailable as e:
        return "end_lost", seq, str(e)
    return ("managed", seq, "") if ended.get("ok") else ("failed", seq, f"end: {ended}")


def helper(sock: Path, framework: Cgroup, calls: int, out_fd: int, go_fd: int) -> None:
    """A container's caller, in its framework/: WARMUP calls, "warm", wait for go, then
    `calls` calls, one line each ("KIND T_START T_END SEQ DETAIL", monotonic clock)."""
    framework.move(os.getpid())
    out = os.fdopen(out_fd, "w", buffering=1)
    for i in range(WARMUP + calls):
        if i == WARMUP:
            out.write("warm\n")
            os.read(go_fd, 1)
        t0 = time.monotonic()
        kind, seq, detail = one_call(sock)
        if i >= WARMUP:
            out.write(f"{kind} {t0:.6f} {time.monotonic():.6f} {seq} "
                      f"{detail.replace(chr(10), ' ')}\n")
    out.close()


@dataclass
class Calls:
    """The outcomes read from the helpers."""

    by_kind: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        kind, t0, t1, _seq, detail = (line.split(" ", 4) + [""])[:5]
        self.by_kind.setdefault(kind, []).append((float(t0), float(t1)))
        if kind == "failed":
            self.failures.append(detail)

    def count(self, kind: str) -> int:
        return len(self.by_kind.get(kind, []))

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.by_kind.values())


def vitals(pid: int) -> dict[str, int]:
    """The daemon's RSS (KiB), open fds and threads."""
    return {"rss_kib": mem_kb(pid)["rss"], "fds": open_fds(pid), "threads": threads(pid)}


def dir_bytes(root: Path) -> int:
    """Bytes of the regular files under root."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def call_dirs(trees: list[ContainerTree]) -> list[Path]:
    """call-* directories left under the trees' tools/, in any hierarchy."""
    return [p for t in trees for d in t.tools.dirs.values() if d.exists()
            for p in d.glob("call-*")]


def restart(d: Daemon, out: dict[str, Any]) -> None:
    """kill -9 the daemon and start it again; the times and its vitals once ready."""
    out["t_kill"] = time.monotonic()
    try:
        d.restart(kill=True)
    except AssertionError as e:  # not back: every later call is unmanaged, and says so
        out["error"] = str(e).splitlines()[0]
        return
    out["t_ready"] = time.monotonic()
    out["vitals"] = vitals(d.proc.pid)


def run(args: Any) -> dict[str, Any]:
    """The soak itself (see the module docstring); its result."""
    per = [args.calls // args.containers + (i < args.calls % args.containers)
           for i in range(args.containers)]
    with (scratch_cgroup("soak") as parent,
          tempfile.TemporaryDirectory(prefix="agentshim-soak-") as tmp):
        d = start_daemon(Path(tmp), bpf=args.bpf)
        trees: list[ContainerTree] = []
        helpers: dict[int, int] = {}  # read fd -> pid
        gos: list[int] = []
        try:
            for i, n in enumerate(per):
                tree, sock = register(d, parent.child(f"soak{i}"), f"soak{i}", POLICY)
                trees.append(tree)
                r, w = os.pipe()
                go_r, go_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        os.close(r)
                        os.close(go_w)
                        helper(sock, tree.framework, n, w, go_r)
                        code = 0
                    finally:
                        os._exit(code)
                os.close(w)
                os.close(go_r)
                helpers[r] = pid
                gos.append(go_w)
            files = {fd: os.fdopen(fd) for fd in helpers}
            for f in files.values():  # every helper warmed up
                if f.readline().strip() != "warm":
                    raise RuntimeError("a helper died during warm-up")
            time.sleep(0.5)
            start_vitals = vitals(d.proc.pid)
            calls = Calls()
            outage: dict[str, Any] = {}
            killer = threading.Thread(target=restart, args=(d, outage))
            t0 = time.monotonic()
            for go in gos:
                os.write(go, b"g")
            live = dict(files)
            while live:
                for fd in select.select(list(live), [], [])[0]:
                    line = live[fd].readline()
                    if not line:
                        del live[fd]
                        continue
                    calls.add(line.rstrip("\n"))
                    if (not args.no_kill and killer.ident is None
                            and calls.total >= args.calls // 2):
                        killer.start()
            wall = time.monotonic() - t0
            if killer.ident is not None:
                killer.join()
            for pid in helpers.values():
                _, status = os.waitpid(pid, 0)
                if status != 0:
                    calls.failures.append(f"helper {pid} exit status {status}")
            for f in files.values():
                f.close()
            # the reaper closes calls whose end was lost (2 s empty), tidy removes the cgroups
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not call_dirs(trees) and not any(
                    c["active_calls"] or c["lingering_calls"] for c in d.status()["containers"]),
                    timeout_s=15, what="the last calls to be closed")
            end_vitals = vitals(d.proc.pid)
            leaked_calls = [str(p) for p in call_dirs(trees)]
            records = [r for i in range(len(per)) for r in d.records(f"soak{i}")]
        finally:
            for pid in helpers.values():
                with contextlib.suppress(ProcessLookupError, ChildProcessError):
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
            for i in range(len(trees)):
                with contextlib.suppress(DaemonUnavailable):
                    request(d.ctl, {"op": "unregister", "id": f"soak{i}"})
            state = dir_bytes(d.state)
            d.stop()
            for t in trees:  # as poststop does
                t.destroy()
        leaked_trees = [str(p) for t in trees for cg in (t.framework, t.tools)
                        for p in cg.dirs.values() if p.exists()]
    kill_t = outage.get("t_kill")
    managed_at = sorted(t for k in ("managed", "end_lost") for t, _ in calls.by_kind.get(k, []))
    back = next((t for t in managed_at if kill_t is not None and t >= kill_t), None)
    unmanaged = calls.by_kind.get("unmanaged", [])
    in_outage = sum(1 for t0, t1 in unmanaged  # answered (or not) after the kill, asked before
                    if kill_t is not None and t1 >= kill_t and (back is None or t0 <= back))
    no_report = sum(1 for r in records if r.get("end") == "no_report")
    return {
        "benchmark": "soak", "cgroups": parent.layout.mode, "bpf": args.bpf,
        "containers": args.containers, "calls": calls.total, "kill": not args.no_kill,
        "managed": calls.count("managed") + calls.count("end_lost"),
        "managed_after_restart": sum(1 for t in managed_at if kill_t is not None and t >= kill_t),
        "ends_lost": calls.count("end_lost"), "unmanaged": len(unmanaged),
        "unmanaged_in_outage": in_outage, "failures": len(calls.failures),
        "failure_examples": calls.failures[:5],
        "records": len(records) - WARMUP * len(per), "no_report_records": no_report,
        "daemon_start": start_vitals, "daemon_after_restart": outage.get("vitals"),
        "daemon_end": end_vitals, "restart_error": outage.get("error"),
        "state_bytes": state, "state_bytes_per_call": round(state / max(1, calls.total), 1),
        "leaked_call_cgroups": len(leaked_calls), "leaked_tree_cgroups": len(leaked_trees),
        "leak_examples": (leaked_calls + leaked_trees)[:5],
        "wall_s": round(wall, 2), "calls_per_s": round(calls.total / wall, 1),
        "restart_s": None if "t_ready" not in outage else round(outage["t_ready"] - kill_t, 3),
        "outage_s": None if back is None or kill_t is None else round(back - kill_t, 3),
    }


def report(r: dict[str, Any]) -> None:
    """The human table."""
    print(f"soak: {r['containers']} containers, {r['calls']} calls, cgroups {r['cgroups']}, "
          f"BPF {'on' if r['bpf'] else 'off'}, {'kill -9 + restart' if r['kill'] else 'no kill'}")
    rows = [("managed", f"{r['managed']} ({r['ends_lost']} whose end was lost to the kill)"),
            ("unmanaged", f"{r['unmanaged']} ({r['unmanaged_in_outage']} in the outage)"),
            ("failures", f"{r['failures']}"
             + "".join(f"\n{'':22s}{x}" for x in r["failure_examples"])),
            ("records", f"{r['records']} ({r['no_report_records']} no_report)"),
            ("wall time", f"{r['wall_s']} s, {r['calls_per_s']} calls/s"),
            ("outage", "-" if not r["kill"] else
             f"{r['outage_s']} s from the kill to the first managed call, "
             f"{r['managed_after_restart']} managed after it (daemon ready after "
             f"{r['restart_s']} s)" if r["outage_s"] is not None else
             f"the last call ran before the daemon was back (ready after {r['restart_s']} s)"),
            ("state dir", f"{r['state_bytes']} bytes, {r['state_bytes_per_call']} per call"),
            ("leaked cgroups", f"{r['leaked_call_cgroups']} call-*, "
             f"{r['leaked_tree_cgroups']} of the trees"
             + "".join(f"\n{'':22s}{x}" for x in r["leak_examples"]))]
    for name, key in (("daemon at start", "daemon_start"),
                      ("after restart", "daemon_after_restart"), ("daemon at end", "daemon_end")):
        v = r[key]
        rows.append((name, "-" if v is None else
                     f"RSS {v['rss_kib'] / 1024:.1f} MiB, {v['fds']} fds, {v['threads']} threads"))
    if r["restart_error"]:
        rows.append(("restart", f"FAILED: {r['restart_error']}"))
    for name, value in rows:
        print(f"  {name:20s}{value}")


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--containers", type=int, default=4)
    ap.add_argument("--calls", type=int, default=10000, help="calls in all (default 10000)")
    ap.add_argument("--no-kill", action="store_true", help="do not kill -9 the daemon")
    ap.add_argument("--bpf", action="store_true", help="agentshimd loads its BPF programs")
    args = parse_args(ap)
    if os.geteuid() != 0:
        print("soak: needs root", file=sys.stderr)
        return 2
    r = run(args)
    report(r)
    write_json(args.json, r)
    bad = (r["failures"] or r["leaked_call_cgroups"] or r["leaked_tree_cgroups"]
           or r["restart_error"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
