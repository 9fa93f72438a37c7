"""Overhead of the memory-event BPF programs on page-fault heavy work.

    sudo .venv/bin/python bench/bpf_overhead.py [--reps 8] [--rounds 3] [--mb 256] \
        [--json out.json]

One child process lives through the whole run, inside a fresh cgroup without a limit. On each
request it maps --mb of anonymous memory (transparent huge pages off, so every 4 KiB page
faults and is charged to the cgroup), writes one byte per page, unmaps it, and reports the
CPU time (user + system, which is where BPF programs run) and the wall time per page.

Configurations, alternated in a different order on every repetition, --rounds requests each:
  unloaded     no program of ours in the kernel
  default      MemEvents() (DEFAULT_TYPES) watching the child's cgroup, polled by a thread
               as agentshimd would
  with_charge  the same plus CHARGE, the per-page source
Prints the medians and overheads (target: default <= 2%) and writes them as JSON.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time

from _common import arg_parser, parse_args, scratch_cgroup, write_json

from agentshim.bpf import DEFAULT_TYPES, EVENT_TYPES, MemEvents
from agentshim.cgroups import Cgroup

CHILD = r"""
import mmap, sys, time
size = int(sys.argv[1]) << 20
pages = size // mmap.PAGESIZE
ones = b"\x01" * pages
for _ in sys.stdin:
    c0, w0 = time.process_time_ns(), time.perf_counter_ns()
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    m[::mmap.PAGESIZE] = ones
    m.close()
    c1, w1 = time.process_time_ns(), time.perf_counter_ns()
    print((c1 - c0) / pages, (w1 - w0) / pages, flush=True)
"""

CONFIGS: dict[str, tuple[str, ...] | None] = {
    "unloaded": None,
    "default": DEFAULT_TYPES,
    "with_charge": EVENT_TYPES,
}


class Child:
    """The page-touching process, held in a cgroup."""

    def __init__(self, cg: Cgroup, mb: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(mb)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        cg.move(self.proc.pid)

    def round(self) -> tuple[float, float]:
        """One map/touch/unmap round: (CPU ns per page, wall ns per page)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        cpu, wall = self.proc.stdout.readline().split()
        return float(cpu), float(wall)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def measure(child: Child, cg: Cgroup, types: tuple[str, ...] | None,
            rounds: int) -> tuple[list[tuple[float, float]], int]:
    """rounds of the child under one configuration; (per-round results, events seen)."""
    if types is None:
        return [child.round() for _ in range(rounds)], 0
    with MemEvents(types=types) as mev:
        mev.watch(cg.dirs["unified"])
        stop = threading.Event()
        seen = [0]

        def poller() -> None:
            while not stop.is_set():
                seen[0] += len(mev.poll(100))

        t = threading.Thread(target=poller, daemon=True)
        t.start()
        try:
            out = [child.round() for _ in range(rounds)]
        finally:
            stop.set()
            t.join()
        return out, seen[0] + len(mev.poll(0))


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = arg_parser(__doc__)
    ap.add_argument("--reps", type=int, default=8, help="repetitions of every configuration")
    ap.add_argument("--rounds", type=int, default=3, help="child rounds per repetition")
    ap.add_argument("--mb", type=int, default=256, help="memory touched per round")
    args = parse_args(ap, argv)
    if os.geteuid() != 0:
        print("needs root (cgroups and BPF)", file=sys.stderr)
        return 2

    cpu: dict[str, list[float]] = {k: [] for k in CONFIGS}
    wall: dict[str, list[float]] = {k: [] for k in CONFIGS}
    events: dict[str, list[int]] = {k: [] for k in CONFIGS}
    with MemEvents(types=EVENT_TYPES) as mev:
        plan = mev.plan_description()
    with scratch_cgroup("b", controllers=False) as cg:
        child = Child(cg, args.mb)
        try:
            for _ in range(3):  # warm-up: the allocator and page tables settle
                child.round()
            names = list(CONFIGS)
            for rep in range(args.reps):
                order = names[rep % len(names):] + names[:rep % len(names)]
                if rep % 2:
                    order.reverse()
                for name in order:
                    res, n = measure(child, cg, CONFIGS[name], args.rounds)
                    cpu[name] += [c for c, _ in res]
                    wall[name] += [w for _, w in res]
                    events[name].append(n)
                    print(f"rep {rep + 1}/{args.reps} {name:<12} cpu "
                          f"{statistics.median(c for c, _ in res):7.1f} ns/page, {n} events",
                          flush=True)
        finally:
            child.close()

    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    overhead_cpu = {k: med_cpu[k] / med_cpu["unloaded"] - 1 for k in CONFIGS if k != "unloaded"}
    overhead_wall = {k: med_wall[k] / med_wall["unloaded"] - 1
                     for k in CONFIGS if k != "unloaded"}
    result = {
        "kernel": os.uname().release,
        "command": "bench/bpf_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "workload": {"mb_per_round": args.mb, "rounds": args.rounds, "reps": args.reps,
                     "page_bytes": os.sysconf("SC_PAGE_SIZE")},
        "configs": {k: list(v) if v else [] for k, v in CONFIGS.items()},
        "plan": plan,
        "cpu_ns_per_page": cpu,
        "wall_ns_per_page": wall,
        "median_cpu_ns_per_page": med_cpu,
        "median_wall_ns_per_page": med_wall,
        "overhead_cpu": overhead_cpu,
        "overhead_wall": overhead_wall,
        "events_per_repetition": events,
        "target": 0.02,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print("\nmedian ns/page (cpu / wall): " + ", ".join(
        f"{k} {med_cpu[k]:.1f} / {med_wall[k]:.1f}" for k in CONFIGS))
    for k in overhead_cpu:
        print(f"overhead {k:<12} cpu {overhead_cpu[k] * 100:+6.2f}%  "
              f"wall {overhead_wall[k] * 100:+6.2f}%  (target for default: <= +2%)")
    write_json(args.json, result, announce=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
