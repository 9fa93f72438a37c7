"""The density sweep as a benchmark: the same tenants under every policy at several overcommit
ratios, with the machine's swap and without swap, and each policy's highest safe overcommit.

    sudo .venv/bin/python bench/density_sweep.py [--traces DIR...] [--tenants 5] \
        [--ratios 2,3] [--swap both|on|off] [--speed 1] [--plot-dir build/bench] [--json out]

Default (what `make bench` runs, ~8 minutes): the demo traces, 5 tenants, ratios 2 and 3,
with and without swap, policies none, static, reactive and agentshim. The full sweep of
docs/replay.md is `--ratios 1,1.5,2,3,4 --policies none,static,static-fixed,reactive,agentshim`.
Prints one table per swap setting and the density ratio: agentshim's highest safe overcommit
over the best of `none`'s and static's (safe: 0 agent deaths, at most 2% of calls killed).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from _common import arg_parser, parse_args, write_json

from agentshim.replay.output import write_sweep_plot
from agentshim.replay.runner import ReplayConfig, ReplayError
from agentshim.replay.sweep import format_sweep, parse_ratios, run_sweep

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "agentshim" / "replay" / "demo_traces"
#: the demo's tasks are ~5x compressed, so is agentshim's freeze_timeout (agentshim demo)
DEMO_FREEZE_TIMEOUT_S = 10.0


def main(argv: list[str] | None = None) -> int:
    """Run the sweep (see the module docstring)."""
    ap = arg_parser(__doc__)
    ap.add_argument("--traces", nargs="+", type=Path, default=None)
    ap.add_argument("--tenants", type=int, default=None)
    ap.add_argument("--ratios", default="2,3")
    ap.add_argument("--policies", default="none,static,reactive,agentshim")
    ap.add_argument("--swap", choices=("both", "on", "off"), default="both")
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--max-duration", type=float, default=None)
    ap.add_argument("--plot-dir", type=Path, default=REPO / "build" / "bench")
    args = parse_args(ap, argv)
    demo = args.traces is None
    traces = sorted(p for p in DEMO.iterdir() if p.is_dir()) if demo else args.traces
    tenants = args.tenants or (5 if demo else None)
    if demo:
        traces = traces[:tenants]
    ratios = parse_ratios(args.ratios)
    base = ReplayConfig(traces=traces, tenants=tenants, speed=args.speed,
                        policies=[p.strip() for p in args.policies.split(",") if p.strip()],
                        static_size="share" if demo else "peak",
                        max_duration_s=args.max_duration,
                        freeze_timeout_s=DEMO_FREEZE_TIMEOUT_S if demo else 30.0)
    settings = {"both": (True, False), "on": (True,), "off": (False,)}[args.swap]
    out: dict[str, Any] = {"traces": "demo" if demo else [str(p) for p in traces],
                           "ratios": ratios, "sweeps": {}}
    for swap in settings:
        label = "swap" if swap else "no-swap"
        cfg = dataclasses.replace(base, swap=swap)
        try:
            doc, _ = run_sweep(cfg, ratios, lambda line: print(line, file=sys.stderr))
        except ReplayError as e:
            print(f"density_sweep: {e}", file=sys.stderr)
            return 1
        out["sweeps"][label] = doc
        print(f"== {label} ==")
        print(format_sweep(doc))
        plot = write_sweep_plot(doc, args.plot_dir / f"density-sweep-{label}.png")
        print(f"plot: {plot}")
    write_json(args.json, out, announce=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
