"""The replay's allocator: memory that follows a profile, every page touched, freed for real.

    python3 -m agentshim.replay.alloc --schedule S --call N --t0 EPOCH [--out FILE]

runs call N of schedule S as a tool call: from wall time t0 on, it holds the call's profile
(a step function of bytes; every page written with content that compresses like real memory),
burning the call's share of one core in between, and exits 0 at
t0 + duration. When it falls behind (throttled, frozen) it goes on from where it is, so the
call ends late. Each chunk it maps is timed (map + touch every page): one JSON line per
profile step goes to FILE, {"lat_ms": [...], "t": EPOCH}.

Standard library only (runs inside the replay image). :class:`Holder` is also what the tenant
uses for the agent's own memory.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
import time
from collections.abc import Callable

from agentshim.replay.pages import block, fill

#: Memory is mapped in chunks of this size; each chunk's map+touch time is one latency sample.
CHUNK = 4 << 20
PAGE = mmap.PAGESIZE
#: CPU is burnt in slices of this many seconds (busy for cpu x slice, asleep for the rest).
SLICE = 0.05


class Holder:
    """Anonymous memory resized on demand; whole chunks are timed (latencies_ms)."""

    def __init__(self) -> None:
        self.maps: list[mmap.mmap] = []
        self.size = 0
        self.latencies_ms: list[float] = []
        block()  # make the page content now, not inside the first timed chunk

    def resize(self, target: int) -> None:
        """Grow (map, and write every page with content that compresses like real memory:
        agentshim.replay.pages) or shrink (unmap) to about target bytes."""
        target = max(0, int(target))
        while self.size + PAGE <= target:
            n = min(CHUNK, (target - self.size) // PAGE * PAGE)
            t = time.perf_counter()
            m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            fill(m, n)
            if n == CHUNK:
                self.latencies_ms.append((time.perf_counter() - t) * 1000)
            self.maps.append(m)
            self.size += n
        while self.maps and self.size - len(self.maps[-1]) >= target:
            m = self.maps.pop()
            self.size -= len(m)
            m.close()

    def release(self) -> None:
        """Unmap everything."""
        self.resize(0)

    def take_latencies(self) -> list[float]:
        """The latencies measured since the last call (and forget them)."""
        out, self.latencies_ms = self.latencies_ms, []
        return out


def burn_until(deadline: float, cpu: float) -> None:
    """Until wall time deadline: spin for cpu x SLICE, sleep for the rest of each slice."""
    while True:
        now = time.time()
        left = deadline - now
        if left <= 0:
            return
        if cpu <= 0:
            time.sleep(min(left, 0.5))
            continue
        busy = min(left, SLICE * min(1.0, cpu))
        stop = now + busy
        while time.time() < stop:
            pass
        rest = min(deadline - time.time(), SLICE - busy)
        if rest > 0:
            time.sleep(rest)


def follow(profile: list[tuple[float, int]], t0: float, duration: float, cpu: float,
           holder: Holder, on_step: Callable[[list[float]], None] | None = None) -> float:
    """Hold profile from wall time t0 (steps at t0 + offset, or later when behind), until
    t0 + duration + the time lost. Returns the seconds lost (0 when on time)."""
    late = 0.0
    for offset, target in profile:
        due = t0 + offset + late
        burn_until(due, cpu)
        now = time.time()
        if now > due:  # behind: the previous step took long, or the call was frozen
            late += now - due
        holder.resize(target)
        if on_step is not None:
            on_step(holder.take_latencies())
    due = t0 + duration + late
    burn_until(due, cpu)
    now = time.time()
    return late + max(0.0, now - due)


def main(argv: list[str] | None = None) -> int:
    """Run one call of a schedule (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python3 -m agentshim.replay.alloc")
    ap.add_argument("--schedule", required=True)
    ap.add_argument("--call", type=int, required=True)
    ap.add_argument("--t0", type=float, help="wall time the call started (default: now)")
    ap.add_argument("--out", help="append latency lines here")
    ap.add_argument("--label", default="", help="shown in process listings only")
    args = ap.parse_args(argv)
    with open(args.schedule) as f:
        sched = json.load(f)
    call = next((c for c in sched["calls"] if int(c["index"]) == args.call), None)
    if call is None:
        print(f"alloc: no call {args.call} in {args.schedule}", file=sys.stderr)
        return 2
    out = open(args.out, "a", buffering=1) if args.out else None  # noqa: SIM115
    t0 = args.t0 if args.t0 is not None else time.time()

    def step(lat: list[float]) -> None:
        if out is not None and lat:
            out.write(json.dumps({"lat_ms": [round(x, 3) for x in lat], "t": time.time()})
                      + "\n")

    holder = Holder()
    profile = [(float(o), int(b)) for o, b in call.get("profile", [])]
    follow(profile, t0, float(call["duration"]), float(call.get("cpu", 0.0)), holder, step)
    holder.release()
    if out is not None:
        out.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
