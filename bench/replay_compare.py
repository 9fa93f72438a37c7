"""The replay comparison as a benchmark: tenants replaying traces on one overcommitted host
under none, static, static-fixed, reactive and agentshim, in real podman containers.

    sudo .venv/bin/python bench/replay_compare.py [--traces DIR...] [--tenants 5] \
        [--overcommit 2.5] [--speed 1] [--static-size share] [--no-podman] [--json out.json]

Default: the demo's traces (agentshim/replay/demo_traces, ~3 minutes), as `agentshim demo`.
With four traces of ../shared/traces/all_images_haiku, --overcommit 1.5 --speed 4
--max-duration 330 it is the issue's target experiment (docs/replay.md). Prints the comparison
table; --json writes the full document (per policy: the metrics and per-tenant detail).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentshim.replay.output import format_table, outcome_line  # noqa: E402
from agentshim.replay.runner import ReplayConfig, ReplayError, run_replay  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "agentshim" / "replay" / "demo_traces"


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (see the module docstring)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--traces", nargs="+", type=Path, default=None)
    ap.add_argument("--tenants", type=int, default=None)
    ap.add_argument("--overcommit", type=float, default=None)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--static-size", default=None)
    ap.add_argument("--max-duration", type=float, default=None)
    ap.add_argument("--freeze-timeout", type=float, default=None,
                    help="agentshim's freeze_timeout in s (demo: 10, else the policy's 30)")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    demo = args.traces is None
    traces = sorted(p for p in DEMO.iterdir() if p.is_dir()) if demo else args.traces
    tenants = args.tenants or (5 if demo else None)
    if demo:
        traces = traces[:tenants]
    config = ReplayConfig(
        traces=traces, tenants=tenants,
        overcommit=args.overcommit if args.overcommit is not None else (2.5 if demo else 1.5),
        speed=args.speed, static_size=args.static_size or ("share" if demo else "peak"),
        podman=not args.no_podman, max_duration_s=args.max_duration,
        freeze_timeout_s=args.freeze_timeout or (10.0 if demo else 30.0))
    try:
        result = run_replay(config, progress=lambda line: print(line, file=sys.stderr))
    except ReplayError as e:
        print(f"replay_compare: {e}", file=sys.stderr)
        return 1
    doc = result.to_json()
    doc["traces"] = "demo" if demo else [str(p) for p in args.traces]
    doc["outcome"] = outcome_line(doc)
    print(format_table(doc), end="")
    print("\n" + doc["outcome"])
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
