"""One tenant: the agent of a replayed trace.

    python3 -m agentshim.replay.tenant --schedule S --out DIR [--go FILE] [--bash BASH]
        [--python PY] [--intent-margin 1.5]

Waits for FILE to exist (so all tenants start together), then holds the agent's own memory
(the schedule's framework level, adjusted between calls) and runs the calls in time. A bash
call is a real tool call, ``BASH -c 'exec PY -m agentshim.replay.alloc ...'``: inside an
agentshim container BASH is the wrapper, so the call gets its own cgroup. It declares its
memory to agentshim (AGENTSHIM_INTENT=memory=<margin x its peak>,category=<label>). The
agent's built-in tools make their memory inside this process. The agent waits for each group
of overlapping calls; time they lose delays everything after (the lag).

DIR/tenant.jsonl gets one JSON line per event: ready, start, call (one per call, with its exit
status), done. DIR/lat/N.jsonl gets call N's allocation latencies. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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

TICK = 0.1
MIB = 1 << 20


class Log:
    """tenant.jsonl: one line per event, flushed at once (the runner reads it live)."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "a", buffering=1)  # noqa: SIM115 (open for the process's life)
        self.lock = threading.Lock()

    def write(self, event: str, **kw: Any) -> None:
        with self.lock:
            self.f.write(json.dumps({"event": event, "t": time.time(), **kw}) + "\n")


def intent_of(call: Call, margin: float) -> str:
    """AGENTSHIM_INTENT of a call: memory = margin x its peak (at least 64 MiB), category."""
    mib = max(64, math.ceil(call.peak_bytes * margin / MIB))
    label = "".join(ch for ch in call.label if ch.isalnum() or ch in "_-")[:64] or "other"
    return f"memory={mib}M,category={label}"


class Tenant:
    """Runs one schedule (see the module docstring)."""

    def __init__(self, sched: Schedule, sched_path: Path, out: Path, bash: str, python: str,
                 margin: float) -> None:
        self.sched = sched
        self.sched_path = sched_path
        self.out = out
        self.bash = bash
        self.python = python
        self.margin = margin
        (out / "lat").mkdir(parents=True, exist_ok=True)
        self.log = Log(out / "tenant.jsonl")
        self.framework = Holder()
        self.t0 = 0.0
        self.lag = 0.0

    def run_bash(self, call: Call, launch: float) -> tuple[int, str]:
        """Run a bash call; (exit status as bash reports it, its stderr tail)."""
        script = " ".join(["exec", shlex.quote(self.python), "-m", "agentshim.replay.alloc",
                           "--schedule", shlex.quote(str(self.sched_path)),
                           "--call", str(call.index), "--t0", f"{launch:.6f}",
                           "--out", shlex.quote(str(self.out / "lat" / f"{call.index}.jsonl")),
                           "--label", shlex.quote(call.label)])
        env = dict(os.environ, AGENTSHIM_INTENT=intent_of(call, self.margin))
        p = subprocess.run([self.bash, "-c", script], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        status = p.returncode if p.returncode >= 0 else 128 - p.returncode
        return status, p.stderr.decode(errors="replace")[-500:]

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
        """Wait for the call's time, run it, log it."""
        due = self.t0 + call.start + self.lag
        self.wait(due, adjust=False)
        launch = time.time()
        if call.kind == BASH:
            status, err = self.run_bash(call, launch)
        else:
            status, err = self.run_internal(call, launch)
        end = time.time()
        self.log.write("call", index=call.index, kind=call.kind, label=call.label,
                       t_start=launch, t_end=end, nominal_start=call.start,
                       nominal_duration=call.duration, exit=status,
                       late_s=round(max(0.0, end - launch - call.duration), 3),
                       peak_bytes=call.peak_bytes, stderr=err.strip()[-300:])

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
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))  # PID 1 in a container ignores it
    sched = Schedule.load(args.schedule)
    tenant = Tenant(sched, args.schedule, args.out, args.bash, args.python, args.intent_margin)
    tenant.log.write("ready", pid=os.getpid())
    if args.go is not None:
        while not args.go.exists():
            time.sleep(0.01)
    return tenant.run()


if __name__ == "__main__":
    sys.exit(main())
