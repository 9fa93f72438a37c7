"""Latency agentshim adds to one tool call: `bash -c true` through the wrapper (start and end
exchanged with agentshimd, the call's cgroup made, entered, recorded and removed) against the
image's own bash (/run/agentshim/bash.real) in the same managed container.

    sudo .venv/bin/python bench/toolcall_latency.py [--iterations 500] [--parallel 8] \
        [--no-bpf] [--json out.json]

A driver (python3 in the python test image, started by `podman exec`, so not a tool call
itself) spawns `bash -c true` with posix_spawn and waits for it, alternating plain and wrapped
runs, and times each spawn-to-reap with a monotonic clock. Two rounds in one run: one
container calling alone ("serial"), then --parallel containers (default 8) each running the
driver at once ("parallel", --parallel 0 skips it). For each it prints p50/p99/p99.9 of plain
and wrapped, the added time at each percentile and the paired differences (wrapped run i minus
plain run i). Targets (issue 14, hybrid host): added p50 <= 1 ms, added p99 <= 3 ms, for one
call at a time. Every wrapped run must have left a call record.

Private agentshim directories and hooks dir; the containers and the daemon the hooks started
are removed at the end.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _common import arg_parser, bench_agentshim, parse_args, stats_line, summary, write_json

from tests.podman_support import PY_IMAGE

TARGET_P50_MS = 1.0
TARGET_P99_MS = 3.0
STATS = ("p50", "p99", "p99.9", "mean")

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


def _round(ash: Any, cids: list[str], iterations: int, warmup: int) -> dict[str, list[float]]:
    """Run the driver in every container at once; all samples (ms) by kind."""
    before = {cid: len(ash.records(cid)) for cid in cids}

    def drive(cid: str) -> dict[str, list[int]]:
        r = ash.hooked("exec", cid, "python3", "-c", DRIVER, str(iterations), str(warmup),
                       timeout=3600)
        return json.loads(r.stdout)

    with ThreadPoolExecutor(max_workers=len(cids)) as pool:
        raws = list(pool.map(drive, cids))
    for cid in cids:
        recorded = len(ash.records(cid)) - before[cid]
        if recorded != iterations + warmup:
            raise SystemExit(f"{recorded} call records for {iterations + warmup} wrapped runs "
                             f"in {cid[:12]}: calls were not all managed")
    out: dict[str, list[float]] = {"plain": [], "wrapped": [], "paired": []}
    for raw in raws:
        ms = {k: [x / 1e6 for x in v] for k, v in raw.items()}
        out["plain"] += ms["plain"]
        out["wrapped"] += ms["wrapped"]
        out["paired"] += [w - p for w, p in zip(ms["wrapped"], ms["plain"], strict=True)]
    return out


def _summarize(samples: dict[str, list[float]]) -> dict[str, Any]:
    stats = {k: summary(samples[k], *STATS, mid_median=True) for k in ("plain", "wrapped")}
    added = {s: round(stats["wrapped"][f"{s}_ms"] - stats["plain"][f"{s}_ms"], 3)
             for s in ("p50", "p99", "p99.9")}
    paired = summary(samples["paired"], "p50", "p99", mid_median=True)
    return {**stats, "runs": len(samples["plain"]),
            **{f"added_{s}_ms": v for s, v in added.items()},
            "paired_diff_p50_ms": paired["p50_ms"], "paired_diff_p99_ms": paired["p99_ms"],
            "ratio_p50": round(stats["wrapped"]["p50_ms"] / stats["plain"]["p50_ms"], 2)}


def _print(label: str, r: dict[str, Any]) -> None:
    print(f"{label}: {r['runs']} runs of each kind")
    for k in ("plain", "wrapped"):
        print(stats_line(k, r[k], STATS, width=8, digits=3))
    print(f"  added    p50 {r['added_p50_ms']:7.3f} ms   p99 {r['added_p99_ms']:7.3f} ms   "
          f"p99.9 {r['added_p99.9_ms']:7.3f} ms   (ratio {r['ratio_p50']:.2f}x at p50)")
    print(f"  paired wrapped-plain: p50 {r['paired_diff_p50_ms']:.3f} ms, "
          f"p99 {r['paired_diff_p99_ms']:.3f} ms")


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--iterations", type=int, default=500, help="runs of each kind")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=8,
                    help="containers calling at once in the second round (0: skip it)")
    ap.add_argument("--no-bpf", action="store_true",
                    help="agentshimd without its BPF programs (AGENTSHIM_BPF=0)")
    args = parse_args(ap)
    if os.geteuid() != 0:
        raise SystemExit("run as root (podman, cgroups)")
    result: dict[str, Any] = {"iterations": args.iterations, "image": PY_IMAGE,
                              "bpf": not args.no_bpf, "parallel": args.parallel}
    with bench_agentshim("ashim-bench-lat", bpf=not args.no_bpf, python=True) as ash:
        cids = []
        for _ in range(max(1, args.parallel)):
            r = ash.hooked("run", "-d", "--name", ash.name(), "--network", "none",
                           "--annotation", "io.agentshim.enable=true", PY_IMAGE,
                           "sleep", "3600")
            cids.append(r.stdout.strip())
        result["serial"] = _summarize(_round(ash, cids[:1], args.iterations, args.warmup))
        if args.parallel:
            result["parallel"] = _summarize(_round(ash, cids, args.iterations, args.warmup))
    serial = result["serial"]
    result.update({
        "added_p50_ms": serial["added_p50_ms"], "added_p99_ms": serial["added_p99_ms"],
        "ratio_p50": serial["ratio_p50"],
        "target_p50_ms": TARGET_P50_MS, "target_p99_ms": TARGET_P99_MS,
        "meets_target": (serial["added_p50_ms"] <= TARGET_P50_MS
                         and serial["added_p99_ms"] <= TARGET_P99_MS)})
    print(f"bash -c true in managed containers (agentshimd BPF {'off' if args.no_bpf else 'on'})")
    _print("one container calling alone", serial)
    if args.parallel:
        _print(f"{args.parallel} containers calling at once", result["parallel"])
    print(f"  targets (alone) added p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms: "
          f"{'met' if result['meets_target'] else 'NOT met'}")
    write_json(args.json, result, announce=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
