"""Cost and cadence of the live recorder (`agentshim trace`) on a real cgroup tree.

    sudo .venv/bin/python bench/trace_recorder.py [--seconds 10] [--samples 3000] [--json out]

A container-like tree (container, framework/, tools/, with a process in framework/ and one in
tools/ allocating and freeing 64 MB over and over) is made under agentshim.bench/ and removed.

1. Per-sample cost, tight loop (no sleeping), --samples samples of the three scopes each:
   - recorder: the recorder's sampler (files kept open, pread at offset 0) and the JSON line;
   - naive (baseline, same run): the cgroup layer's methods (memory_usage, cpu_usage_us,
     pressure: open, read, close each file every time) and the same JSON line.
2. The recorder itself for --seconds at 100 ms and at 10 ms: its CPU as a percentage of one
   CPU, CPU per sample, tick lateness (P50/P99/max) and missed ticks.
Prints a table and the ratio naive/recorder; --json writes the numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import arg_parser, parse_args, scratch_cgroup, write_json

from agentshim.cgroups import ContainerTree, TreeBudget
from agentshim.trace.format import sample_line
from agentshim.trace.model import Sample
from agentshim.trace.recorder import Recorder, ScopeReader
from agentshim.trace.target import target_from_cgroup

CHURN = ("import time\nwhile True:\n    b = bytearray(64 << 20)\n"
         "    for i in range(0, len(b), 4096):\n        b[i] = 1\n"
         "    time.sleep(0.2)\n    del b\n    time.sleep(0.2)\n")


def _per_sample_us(fn, n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return 1e6 * (time.process_time() - t0) / n


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--samples", type=int, default=3000)
    args = parse_args(ap)
    if os.geteuid() != 0:
        print("needs root (creates cgroups)", file=sys.stderr)
        return 1
    procs: list[subprocess.Popen[bytes]] = []
    with scratch_cgroup("trace") as root:
        out: dict[str, object] = {"cgroup_mode": root.layout.mode}
        try:
            procs.append(subprocess.Popen(["sleep", "3600"]))
            root.move(procs[0].pid)
            tree = ContainerTree(root)
            tree.build(TreeBudget())
            procs.append(subprocess.Popen([sys.executable, "-c", CHURN]))
            tree.tools.move(procs[1].pid)
            time.sleep(0.5)
            scopes = {"container": root, "framework": tree.framework, "tools": tree.tools}

            readers = {k: ScopeReader(cg) for k, cg in scopes.items()}

            def fast() -> None:
                r = {k: rd.read() for k, rd in readers.items()}
                sample_line(Sample(time.time(), r["container"].mem_bytes, 1.0, {
                    "mem_psi": r["container"].psi,
                    **{k: {"mem_bytes": v.mem_bytes, "cpu_pct": 1.0, "mem_psi": v.psi}
                       for k, v in r.items() if k != "container"}}))

            def naive() -> None:
                r = {}
                for k, cg in scopes.items():
                    p = cg.pressure()
                    r[k] = (cg.memory_usage(), cg.cpu_usage_us(),
                            {"some_avg10": p.some.avg10, "some_total_us": p.some.total_us})
                sample_line(Sample(time.time(), r["container"][0], 1.0, {
                    "mem_psi": r["container"][2],
                    **{k: {"mem_bytes": v[0], "cpu_pct": 1.0, "mem_psi": v[2]}
                       for k, v in r.items() if k != "container"}}))

            fast_us = min(_per_sample_us(fast, args.samples) for _ in range(3))
            naive_us = min(_per_sample_us(naive, args.samples) for _ in range(3))
            for rd in readers.values():
                rd.close()
            out["tight_loop_us_per_sample"] = {"recorder": round(fast_us, 1),
                                               "naive": round(naive_us, 1),
                                               "ratio_naive_over_recorder":
                                                   round(naive_us / fast_us, 2)}
            runs = {}
            for interval in (0.1, 0.01):
                with tempfile.TemporaryDirectory() as tmp:
                    target = target_from_cgroup("b" * 64, root, Path(tmp) / "state")
                    res = Recorder(target, Path(tmp) / "t", interval_s=interval,
                                   duration_s=args.seconds).run()
                    m = res.meta
                    runs[f"{interval * 1000:g}ms"] = {
                        "samples": res.samples, "missed_ticks": res.missed_ticks,
                        "cpu_pct_of_one_cpu": round(res.recorder_cpu_pct, 3),
                        "us_per_sample": m["recorder_us_per_sample"],
                        "tick_late_ms": m["tick_late_ms"]}
            out["recorder_runs"] = runs
        finally:
            for p in procs:
                p.kill()
                p.wait()
    tl = out["tight_loop_us_per_sample"]
    print(f"cgroups: {out['cgroup_mode']}; three scopes (container, framework/, tools/) per sample")
    print(f"per sample, tight loop: recorder {tl['recorder']} us, naive open/read/close "
          f"{tl['naive']} us  (naive/recorder {tl['ratio_naive_over_recorder']}x)")
    print(f"{'interval':>8}  {'samples':>7}  {'missed':>6}  {'cpu % of 1 CPU':>14}  "
          f"{'us/sample':>9}  {'late P50/P99/max ms':>20}")
    for name, r in out["recorder_runs"].items():
        late = r["tick_late_ms"]
        print(f"{name:>8}  {r['samples']:>7}  {r['missed_ticks']:>6}  "
              f"{r['cpu_pct_of_one_cpu']:>14}  {r['us_per_sample']:>9}  "
              f"{late['p50']:>6}/{late['p99']}/{late['max']:>6}")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
