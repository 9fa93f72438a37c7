"""One tenant: the agent of a replayed trace.

    python3 -m agentshim.replay.tenant --schedule S --out DIR [--go FILE] [--bash BASH]
        [--python PY] [--intent-margin 1.5] [--retries 2]

Waits for FILE to exist (so all tenants start together), then holds the agent's own memory
(the schedule's framework level, adjusted between calls) and runs the calls in time. A bash
call is a real tool call, ``BASH -c 'exec PY -m agentshim.replay.alloc ...'``: inside an
agentshim container BASH is the wrapper, so the call gets its own cgroup. It declares its
memory to agentshim (AGENTSHIM_INTENT=memory=<margin x its peak>,category=<label>). The
agent's built-in tools make their memory inside this process. The agent waits for each group
of overlapping calls; time they lose delays everything after (the lag). A bash call that is
killed (status 137) is run again from its start, as an agent re-runs a command that died, up
to --retries times; then the agent moves on and the call has failed.

DIR/tenant.jsonl gets one JSON line per event: ready, start, call (one per run of a call: its
attempt number, exit status and CPU seconds), done. DIR/lat/N.jsonl gets call N's allocation
latencies. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agentshim.replay.alloc import Holder, follow
from agentshim.replay.schedule import BASH, Call, Schedule
from agentshim.units import MIB

TICK = 0.1
#: Exit status of a killed call (SIGKILL), the one that makes the agent re-run it.
KILLED = 128 + 9


class Log:
    """tenant.jsonl: one line per event, flushed at once (the runner reads it live)."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "a", buffering=1)  # noqa: SIM115 (open for the process's life)
        self.lock = threading.Lock()

    def write(self, event: str, **kw: Any) -> None:
        with self.lock:
            self.f.write(json.dumps({"event": event, "t": time.time(), **kw}) + "\n")


def cpu_seconds(usage: resource.struct_rusage) -> float:
    """User + system CPU seconds of a rusage."""
    return float(usage.ru_utime + usage.ru_stime)


def intent_of(call: Call, margin: float) -> str:
    """AGENTSHIM_INTENT of a call: memory = margin x its peak (at least 64 MiB), category."""
    mib = max(64, math.ceil(call.peak_bytes * margin / MIB))
    label = "".join(ch for ch in call.label if ch.isalnum() or ch in "_-")[:64] or "other"
    return f"memory={mib}M,category={label}"


class Tenant:
    """Runs one schedule (see the module docstring)."""

    def __init__(self, sched: Schedule, sched_path: Path, out: Path, bash: str, python: str,
                 margin: float, retries: int = 2) -> None:
        self.sched = sched
        self.sched_path = sched_path
        self.out = out
        self.bash = bash
        self.python = python
        self.margin = margin
        self.retries = retries
        (out / "lat").mkdir(parents=True, exist_ok=True)
        self.log = Log(out / "tenant.jsonl")
        self.framework = Holder()
        self.t0 = 0.0
        self.lag = 0.0

    def run_bash(self, call: Call, launch: float) -> tuple[int, str, float]:
        """Run a bash call; (exit status as bash reports it, its stderr tail, the CPU seconds
        it and its children used, from their rusage)."""
        script = " ".join(["exec", shlex.quote(self.python), "-m", "agentshim.replay.alloc",
                           "--schedule", shlex.quote(str(self.sched_path)),
                           "--call", str(call.index), "--t0", f"{launch:.6f}",
                           "--out", shlex.quote(str(self.out / "lat" / f"{call.index}.jsonl")),
                           "--label", shlex.quote(call.label)])
        env = dict(os.environ, AGENTSHIM_INTENT=intent_of(call, self.margin))
        p = subprocess.Popen([self.bash, "-c", script], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert p.stderr is not None
        err = p.stderr.read()
        p.stderr.close()
        _, wstatus, usage = os.wait4(p.pid, 0)  # this call's own rusage (threads run others)
        p.returncode = code = os.waitstatus_to_exitcode(wstatus)
        status = code if code >= 0 else 128 - code
        return status, err.decode(errors="replace")[-500:], cpu_seconds(usage)

    def run_internal(self, call: Call, launch: float) -> tuple[int, str]:
        """An agent's built-in tool: its memory is made inside this process."""
        holder = Holder()
        lat_path = self.out / "lat" / f"{call.index}.jsonl"
        with open(lat_path, "a") as f:
            def step(lat: list[float]) -> None:
                if lat:
                    f.write(json.dumps({"lat_ms": [round(x, 3) for x in lat]}) + "\n")
            try:
                follow(call.profile, launch, call.duration, 0.0, holder, step)
            finally:
                holder.release()
        return 0, ""

    def run_call(self, call: Call) -> None:
        """Wait for the call's time, run it (again when killed, up to retries times), log
        each run."""
        due = self.t0 + call.start + self.lag
        self.wait(due, adjust=False)
        for attempt in range(self.retries + 1):
            launch = time.time()
            cpu = 0.0
            if call.kind == BASH:
                status, err, cpu = self.run_bash(call, launch)
            else:
                status, err = self.run_internal(call, launch)
            end = time.time()
            last = status != KILLED or attempt == self.retries
            self.log.write("call", index=call.index, kind=call.kind, label=call.label,
                           attempt=attempt, final=last, t_start=launch, t_end=end,
                           nominal_start=call.start, nominal_duration=call.duration,
                           exit=status, cpu_s=round(cpu, 4),
                           late_s=round(max(0.0, end - launch - call.duration), 3),
                           peak_bytes=call.peak_bytes, stderr=err.strip()[-300:])
            if last:
                return

    def wait(self, until: float, adjust: bool = True) -> None:
        """Sleep until wall time `until`, keeping the agent's memory at the trace's level."""
        while True:
            now = time.time()
            if adjust:
                self.framework.resize(self.sched.framework_at(now - self.t0 - self.lag))
            if now >= until:
                return
            time.sleep(min(TICK, until - now))

    def run(self) -> int:
        """The whole schedule; 0 when it was played to the end."""
        self.t0 = time.time()
        self.framework.resize(self.sched.framework_at(0.0))
        self.framework.take_latencies()
        self.log.write("start", baseline_bytes=self.sched.baseline_bytes)
        for batch in self.sched.batches():
            self.wait(self.t0 + batch[0].start + self.lag)
            threads = [threading.Thread(target=self.run_call, args=(c,), daemon=True)
                       for c in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            nominal_end = self.t0 + max(c.end for c in batch) + self.lag
            self.lag += max(0.0, time.time() - nominal_end)
        self.wait(self.t0 + self.sched.duration + self.lag)
        self.log.write("done", lag_s=round(self.lag, 3), wall_s=round(time.time() - self.t0, 3),
                       nominal_s=self.sched.duration)
        self.framework.release()
        return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python3 -m agentshim.replay.tenant")
    ap.add_argument("--schedule", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--go", type=Path, help="start once this file exists")
    ap.add_argument("--bash", default="bash", help="the shell tool calls go through")
    ap.add_argument("--python", default="python3", help="interpreter of the calls")
    ap.add_argument("--intent-margin", type=float, default=1.5)
    ap.add_argument("--retries", type=int, default=2,
                    help="re-run a killed bash call up to this many times")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))  # PID 1 in a container ignores it
    sched = Schedule.load(args.schedule)
    tenant = Tenant(sched, args.schedule, args.out, args.bash, args.python, args.intent_margin,
                    max(0, args.retries))
    tenant.log.write("ready", pid=os.getpid())
    if args.go is not None:
        while not args.go.exists():
            time.sleep(0.01)
    return tenant.run()


if __name__ == "__main__":
    sys.exit(main())
