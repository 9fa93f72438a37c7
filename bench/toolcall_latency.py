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

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.podman_support import (  # noqa: E402
    PY_IMAGE,
    Podman,
    build_images,
    private_env,
    write_hooks_dir,
)

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


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs, nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=500, help="runs of each kind")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--no-bpf", action="store_true",
                    help="agentshimd without its BPF programs (AGENTSHIM_BPF=0)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (podman, cgroups)")
    subprocess.run(["make", "-s", "-C", str(REPO / "wrapper")], check=True)
    build_images(Podman(), python=True)
    root = Path(tempfile.mkdtemp(prefix="ashim-lat-"))
    env = private_env(root)
    if args.no_bpf:
        env["AGENTSHIM_BPF"] = "0"
    podman = Podman(["podman", "--hooks-dir", str(write_hooks_dir(root / "hooks.d", env))])
    name = f"ashim-bench-lat-{uuid.uuid4().hex[:8]}"
    try:
        r = podman("run", "-d", "--name", name, "--network", "none",
                   "--annotation", "io.agentshim.enable=true", PY_IMAGE, "sleep", "3600")
        cid = r.stdout.strip()
        r = podman("exec", name, "python3", "-c", DRIVER, str(args.iterations),
                   str(args.warmup), timeout=1800)
        raw = json.loads(r.stdout)
        calls = root / "state" / "calls" / f"{cid}.jsonl"
        recorded = len(calls.read_text().splitlines()) if calls.exists() else 0
        want = args.iterations + args.warmup
        if recorded != want:
            raise SystemExit(f"{recorded} call records for {want} wrapped runs: calls were "
                             "not all managed")
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
        lock = root / "run" / "agentshimd.lock"
        if lock.exists() and lock.read_text().strip().isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(lock.read_text()), signal.SIGTERM)
            time.sleep(0.3)
        shutil.rmtree(root, ignore_errors=True)

    ms = {k: [x / 1e6 for x in v] for k, v in raw.items()}
    paired = [w - p for w, p in zip(ms["wrapped"], ms["plain"], strict=True)]
    stats = {k: {"p50_ms": round(statistics.median(v), 3), "p99_ms": round(pct(v, 0.99), 3),
                 "mean_ms": round(statistics.fmean(v), 3)} for k, v in ms.items()}
    added_p50 = stats["wrapped"]["p50_ms"] - stats["plain"]["p50_ms"]
    added_p99 = stats["wrapped"]["p99_ms"] - stats["plain"]["p99_ms"]
    result = {
        "iterations": args.iterations, "image": PY_IMAGE, "bpf": not args.no_bpf, **stats,
        "added_p50_ms": round(added_p50, 3), "added_p99_ms": round(added_p99, 3),
        "paired_diff_p50_ms": round(statistics.median(paired), 3),
        "paired_diff_p99_ms": round(pct(paired, 0.99), 3),
        "ratio_p50": round(stats["wrapped"]["p50_ms"] / stats["plain"]["p50_ms"], 2),
        "target_p50_ms": TARGET_P50_MS, "target_p99_ms": TARGET_P99_MS,
        "meets_target": added_p50 <= TARGET_P50_MS and added_p99 <= TARGET_P99_MS,
    }
    print(f"bash -c true in a managed container, {args.iterations} runs each "
          f"(agentshimd BPF {'off' if args.no_bpf else 'on'})")
    for k in ("plain", "wrapped"):
        print(f"  {k:8s} p50 {stats[k]['p50_ms']:7.3f} ms   p99 {stats[k]['p99_ms']:7.3f} ms   "
              f"mean {stats[k]['mean_ms']:7.3f} ms")
    print(f"  added    p50 {added_p50:7.3f} ms   p99 {added_p99:7.3f} ms   "
          f"(ratio {result['ratio_p50']:.2f}x at p50)")
    print(f"  paired wrapped-plain: p50 {result['paired_diff_p50_ms']:.3f} ms, "
          f"p99 {result['paired_diff_p99_ms']:.3f} ms")
    print(f"  targets p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms: "
          f"{'met' if result['meets_target'] else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
