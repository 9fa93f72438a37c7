"""Container start (and removal) time added by agentshim's OCI hooks.

    sudo .venv/bin/python bench/container_start.py [--runs 20] [--network none] [--json out.json]

Times `podman run --rm IMAGE true` (create, start, run, stop, remove: the whole life cycle a
user waits for) with agentshim's hooks (annotation io.agentshim.enable=true: precreate,
prestart and poststop run, the tree is built and registered with agentshimd, then torn down)
and without (the same hooks dir, no annotation: podman runs no hook). The two kinds alternate,
in a different order each round, after one warm-up run of each (which also starts the private
agentshimd). Prints p50/p90 of each, the added p50 and the ratio; target: added p50 <= 300 ms.

Private agentshim directories (AGENTSHIM_RUN_DIR/STATE_DIR under /tmp) and a private hooks dir;
the daemon started by the hooks is stopped at the end.
"""

from __future__ import annotations

import os
import sys
import time

from _common import arg_parser, bench_agentshim, parse_args, stats_line, summary, write_json

from tests.podman_support import IMAGE, Podman

TARGET_ADDED_P50_MS = 300.0


def one_run(podman: Podman, image: str, managed: bool, network: str) -> float:
    """Wall seconds of one `podman run --rm IMAGE true`."""
    ann = ["--annotation", "io.agentshim.enable=true"] if managed else []
    t0 = time.perf_counter()
    r = podman("run", "--rm", "--network", network, *ann, image, "true", check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"podman run failed ({r.returncode}): {r.stderr}")
    return dt


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--runs", type=int, default=20, help="runs of each kind")
    ap.add_argument("--image", default=IMAGE)
    ap.add_argument("--network", default="none", help="podman --network (default: none)")
    ap.add_argument("--no-bpf", action="store_true",
                    help="agentshimd without its BPF programs (AGENTSHIM_BPF=0), to see their "
                         "share of the cost")
    args = parse_args(ap)
    if os.geteuid() != 0:
        raise SystemExit("run as root (podman, cgroups)")
    samples: dict[str, list[float]] = {"plain": [], "agentshim": []}
    with bench_agentshim("ashim-bench-start", bpf=not args.no_bpf) as ash:
        podman = ash.hooked
        one_run(podman, args.image, True, args.network)  # warm-up; starts agentshimd
        one_run(podman, args.image, False, args.network)
        for i in range(args.runs):
            order = [False, True] if i % 2 == 0 else [True, False]
            for managed in order:
                samples["agentshim" if managed else "plain"].append(
                    one_run(podman, args.image, managed, args.network))
    ms = {k: [x * 1000 for x in v] for k, v in samples.items()}
    res = {k: {**summary(v, "p50", "p90", "min", digits=1, mid_median=True),
               "samples_ms": [round(x, 1) for x in v]}
           for k, v in ms.items()}
    added = res["agentshim"]["p50_ms"] - res["plain"]["p50_ms"]
    result = {"runs": args.runs, "image": args.image, "network": args.network,
              "bpf": not args.no_bpf, **res,
              "added_p50_ms": round(added, 1),
              "ratio_p50": round(res["agentshim"]["p50_ms"] / res["plain"]["p50_ms"], 3),
              "target_added_p50_ms": TARGET_ADDED_P50_MS,
              "meets_target": added <= TARGET_ADDED_P50_MS}
    print(f"podman run --rm {args.image} true, {args.runs} runs each (network {args.network}, "
          f"agentshimd BPF {'off' if args.no_bpf else 'on'})")
    for k in ("plain", "agentshim"):
        print(stats_line(k, res[k], ("p50", "p90", "min"), width=10, digits=1))
    print(f"  added p50 {added:.1f} ms (ratio {result['ratio_p50']:.2f}x); target <= "
          f"{TARGET_ADDED_P50_MS:.0f} ms: {'met' if result['meets_target'] else 'NOT met'}")
    write_json(args.json, result, announce=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
