"""Latency agentshim adds to one tool call: `bash -c true` through the wrapper (start and end
exchanged with agentshimd, the call's cgroup made, entered, recorded and removed) against the
image's own bash (/run/agentshim/bash.real) in the same managed container.

    sudo .venv/bin/python bench/toolcall_latency.py [--iterations 500] [--no-bpf] \
        [--json out.json]

A driver (python3 in the python test image, started by `podman exec`, so not a tool call
itself) spawns `bash -c true` with posix_spawn and waits for it, alternating plain and wrapped
runs, and times each spawn-to-reap with a monotonic clock. It prints p50/p99 of each, of the
difference of the percentiles, and of the paired differences (wrapped run i minus plain run i).
Targets: added p50 <= 3 ms, added p99 <= 10 ms. Every wrapped run must have left a call record.

Private agentshim directories and hooks dir; the container and the daemon the hooks started are
removed at the end.
"""

from __future__ import annotations

import json
import os
import sys

from _common import arg_parser, bench_agentshim, parse_args, stats_line, summary, write_json

from tests.podman_support import PY_IMAGE

TARGET_P50_MS = 3.0
TARGET_P99_MS = 10.0

DRIVER = r"""
import json, os, sys, time
n, warmup = int(sys.argv[1]), int(sys.argv[2])
runs = {"plain": "/run/agentshim/bash.real", "wrapped": "/usr/bin/bash"}
argv = ["bash", "-c", "true"]
env = dict(os.environ)
out = {"plain": [], "wrapped": []}
def once(path):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(path, argv, env)
    _, status = os.waitpid(pid, 0)
    dt = time.perf_counter_ns() - t0
    if status != 0:
        raise SystemExit(f"{path} -c true: wait status {status}")
    return dt
for i in range(warmup + n):
    order = ("plain", "wrapped") if i % 2 == 0 else ("wrapped", "plain")
    for kind in order:
        dt = once(runs[kind])
        if i >= warmup:
            out[kind].append(dt)
print(json.dumps(out))
"""


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--iterations", type=int, default=500, help="runs of each kind")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--no-bpf", action="store_true",
                    help="agentshimd without its BPF programs (AGENTSHIM_BPF=0)")
    args = parse_args(ap)
    if os.geteuid() != 0:
        raise SystemExit("run as root (podman, cgroups)")
    with bench_agentshim("ashim-bench-lat", bpf=not args.no_bpf, python=True) as ash:
        r = ash.hooked("run", "-d", "--name", ash.name(), "--network", "none",
                       "--annotation", "io.agentshim.enable=true", PY_IMAGE, "sleep", "3600")
        cid = r.stdout.strip()
        r = ash.hooked("exec", cid, "python3", "-c", DRIVER, str(args.iterations),
                       str(args.warmup), timeout=1800)
        raw = json.loads(r.stdout)
        recorded = len(ash.records(cid))
        want = args.iterations + args.warmup
        if recorded != want:
            raise SystemExit(f"{recorded} call records for {want} wrapped runs: calls were "
                             "not all managed")

    ms = {k: [x / 1e6 for x in v] for k, v in raw.items()}
    paired = summary([w - p for w, p in zip(ms["wrapped"], ms["plain"], strict=True)],
                     "p50", "p99", mid_median=True)
    stats = {k: summary(v, "p50", "p99", "mean", mid_median=True) for k, v in ms.items()}
    added_p50 = stats["wrapped"]["p50_ms"] - stats["plain"]["p50_ms"]
    added_p99 = stats["wrapped"]["p99_ms"] - stats["plain"]["p99_ms"]
    result = {
        "iterations": args.iterations, "image": PY_IMAGE, "bpf": not args.no_bpf, **stats,
        "added_p50_ms": round(added_p50, 3), "added_p99_ms": round(added_p99, 3),
        "paired_diff_p50_ms": paired["p50_ms"],
        "paired_diff_p99_ms": paired["p99_ms"],
        "ratio_p50": round(stats["wrapped"]["p50_ms"] / stats["plain"]["p50_ms"], 2),
        "target_p50_ms": TARGET_P50_MS, "target_p99_ms": TARGET_P99_MS,
        "meets_target": added_p50 <= TARGET_P50_MS and added_p99 <= TARGET_P99_MS,
    }
    print(f"bash -c true in a managed container, {args.iterations} runs each "
          f"(agentshimd BPF {'off' if args.no_bpf else 'on'})")
    for k in ("plain", "wrapped"):
        print(stats_line(k, stats[k], ("p50", "p99", "mean"), width=8, digits=3))
    print(f"  added    p50 {added_p50:7.3f} ms   p99 {added_p99:7.3f} ms   "
          f"(ratio {result['ratio_p50']:.2f}x at p50)")
    print(f"  paired wrapped-plain: p50 {result['paired_diff_p50_ms']:.3f} ms, "
          f"p99 {result['paired_diff_p99_ms']:.3f} ms")
    print(f"  targets p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms: "
          f"{'met' if result['meets_target'] else 'NOT met'}")
    write_json(args.json, result, announce=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
