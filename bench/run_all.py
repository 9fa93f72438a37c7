"""Every benchmark of the project in one run: `make bench`.

    sudo .venv/bin/python bench/run_all.py [--only NAME...] [--skip NAME...]

Runs each bench/*.py with --json and its ARGS (the known ones in the order below, then any other
script found in bench/), shows their output as they go, keeps each one's log in
build/bench/NAME.log, and writes bench/results.json (every benchmark's own JSON, its status and
duration, the host) and bench/results.md (a markdown summary: one table of key figures per
benchmark, the replay comparison as a table). A benchmark that is not in the tree yet is skipped
with a note; one that fails is reported as failed and the others still run (exit status 1 then).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOGS = REPO / "build" / "bench"
sys.path.insert(0, str(REPO))

#: (script name, what it measures), in run order.
KNOWN = (
    ("toolcall_latency", "tool-call overhead (wrapper + agentshimd vs plain bash)"),
    ("container_start", "container start overhead (hooks vs none)"),
    ("reaction_time", "ladder reaction time vs a 1 s poller"),
    ("bpf_overhead", "BPF program overhead on page-fault heavy work"),
    ("daemon_memory", "agentshimd memory with 1 vs 20 containers"),
    ("trace_recorder", "live trace recorder cost"),
    ("replay_compare", "replay comparison: none / static / static-fixed / reactive / agentshim"),
    ("density_sweep", "density sweep: every policy at 2x and 3x, with and without swap"),
    ("soak", "agentshimd soak: calls through a kill -9 and restart, leaks"),
)
#: options a benchmark gets in `make bench` besides --json (the soak's full size is 10,000
#: calls: run that by hand, docs/daemon.md)
ARGS = {"soak": ["--calls", "1000"]}
NOT_BENCHMARKS = {"run_all"}
TIMEOUT_S = 45 * 60


def host_info() -> dict[str, Any]:
    """What machine the numbers come from."""
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    try:
        from agentshim.cgroups import detect_layout

        cgroups = detect_layout().mode
    except Exception:  # the summary must not fail on an odd host
        cgroups = "unknown"
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "mem_mib": mem,
            "cgroups": cgroups, "python": platform.python_version()}


def scripts() -> list[tuple[str, str, Path]]:
    """(name, title, path) of every benchmark: the known ones, then others found in bench/."""
    out = [(name, title, BENCH / f"{name}.py") for name, title in KNOWN]
    known = {name for name, _ in KNOWN} | NOT_BENCHMARKS
    for extra in sorted(BENCH.glob("*.py")):
        if extra.stem not in known and not extra.stem.startswith("_"):
            out.append((extra.stem, extra.stem.replace("_", " "), extra))
    return out


def run_one(name: str, path: Path) -> dict[str, Any]:
    """Run one benchmark with --json; its status, duration and JSON."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{name}.log"
    with tempfile.TemporaryDirectory(prefix=f"agentshim-bench-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        t0 = time.monotonic()
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, str(path), *ARGS.get(name, []),
                                     "--json", str(out)], cwd=REPO,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    sys.stdout.write(f"  {line}")
                    sys.stdout.flush()
                    log.write(line)
                rc = proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = -9
        seconds = round(time.monotonic() - t0, 1)
        result = None
        if out.exists():
            try:
                result = json.loads(out.read_text())
            except ValueError:
                result = None
    status = "ok" if rc == 0 and result is not None else "failed"
    return {"status": status, "exit": rc, "seconds": seconds, "log": str(log_path),
            "result": result}


def key_figures(result: Any, limit: int = 20) -> list[tuple[str, str]]:
    """The scalar values of a benchmark's JSON (one level of nesting), for the summary."""
    out: list[tuple[str, str]] = []
    if not isinstance(result, dict):
        return out

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    for k, v in result.items():
        if isinstance(v, bool | int | float | str) and len(str(v)) <= 60:
            out.append((k, fmt(v)))
        elif isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, bool | int | float) and len(out) < limit * 2:
                    out.append((f"{k}.{k2}", fmt(v2)))
    return out[:limit]


def markdown(results: dict[str, Any]) -> str:
    """bench/results.md."""
    h = results["host"]
    lines = ["# Benchmark results", "",
             f"`make bench` on {results['date']}: kernel {h['kernel']}, {h['cpus']} CPUs, "
             f"{h['mem_mib']} MiB, cgroups {h['cgroups']}. Each benchmark's own JSON is in "
             "bench/results.json; its log in build/bench/.", "",
             "| benchmark | what | status | time (s) |", "|---|---|---|---|"]
    for name, b in results["benchmarks"].items():
        lines.append(f"| {name} | {b['title']} | {b['status']} | {b.get('seconds', '-')} |")
    for name, b in results["benchmarks"].items():
        res = b.get("result")
        if b["status"] != "ok" or res is None:
            continue
        lines += ["", f"## {name}", "", b["title"], ""]
        if name == "replay_compare" and isinstance(res, dict) and "policies" in res:
            from agentshim.replay.output import format_markdown

            c = res.get("config", {})
            lines.append(f"{c.get('tenants')} tenants, host {c.get('host_mb')} MiB, overcommit "
                         f"{c.get('overcommit')}x, speed {c.get('speed')}x, "
                         f"{'podman' if c.get('podman') else 'bare cgroups'}.")
            lines += ["", format_markdown(res["policies"]).rstrip()]
            continue
        if name == "density_sweep" and isinstance(res, dict) and "sweeps" in res:
            from agentshim.replay.sweep import format_sweep

            for label, doc in res["sweeps"].items():
                lines += [f"{label}:", "", "```", format_sweep(doc).rstrip(), "```", ""]
            continue
        figures = key_figures(res)
        if figures:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in figures]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (see the module docstring)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=None, help="run only these benchmarks")
    ap.add_argument("--skip", nargs="+", default=[], help="do not run these benchmarks")
    ap.add_argument("--out", type=Path, default=BENCH, help="where results.json/md go")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run_all: benchmarks need root (cgroups, podman, BPF)", file=sys.stderr)
        return 1
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                               "host": host_info(), "benchmarks": {}}
    failed = False
    for name, title, path in scripts():
        if (args.only and name not in args.only) or name in args.skip:
            continue
        if not path.exists():
            print(f"== {name}: not in this tree yet ({path.name}); skipped", flush=True)
            results["benchmarks"][name] = {"title": title, "status": "absent"}
            continue
        print(f"== {name}: {title}", flush=True)
        r = run_one(name, path)
        failed |= r["status"] != "ok"
        print(f"== {name}: {r['status']} in {r['seconds']} s", flush=True)
        results["benchmarks"][name] = {"title": title, **r}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
