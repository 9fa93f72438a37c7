"""Real memory and CPU load for tests, benchmarks and trace replay.

    python -m agentshim.workload alloc --mb 300 [--step-mb 16] [--step-ms 0] [--hold 1.5]
    python -m agentshim.workload count FILE [--interval-ms 5]

`alloc` allocates and touches memory (every page is written, so it is charged to the cgroup,
with content that compresses ~2.6x like real memory, never same-filled: agentshim.replay.pages)
in steps, holds it, then exits 0; it prints "allocated N MiB" after each step when --verbose.
--mb and --step-mb count MiB (2**20 bytes).
`count` increments a counter in FILE forever, so a test can see whether a process makes
progress (frozen or not). With --wait-stdin both wait for one byte on stdin before starting,
so a test can move the process into a cgroup first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from agentshim.replay.pages import content
from agentshim.units import MIB


def allocate(total_mb: int, step_mb: int = 16, step_ms: float = 0.0, hold_s: float = 0.0,
             verbose: bool = False) -> list[bytes]:
    """Allocate total_mb MiB in step_mb chunks, each fully written; hold, then return them."""
    chunks: list[bytes] = []
    done = 0
    while done < total_mb:
        n = min(step_mb, total_mb - done)
        chunks.append(content(n * MIB))
        done += n
        if verbose:
            print(f"allocated {done} MiB", flush=True)
        if step_ms:
            time.sleep(step_ms / 1000)
    if hold_s:
        time.sleep(hold_s)
    return chunks


def count(path: str, interval_ms: float = 5.0) -> None:
    """Write an ever-growing counter to path (rewritten in place) forever."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    i = 0
    while True:
        i += 1
        os.pwrite(fd, f"{i:>20}\n".encode(), 0)
        time.sleep(interval_ms / 1000)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m agentshim.workload")
    ap.add_argument("--wait-stdin", action="store_true", help="start after one byte on stdin")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("alloc", help="allocate and touch memory")
    a.add_argument("--mb", type=int, required=True)
    a.add_argument("--step-mb", type=int, default=16)
    a.add_argument("--step-ms", type=float, default=0.0)
    a.add_argument("--hold", type=float, default=0.0, help="seconds to hold the memory")
    a.add_argument("--verbose", action="store_true")
    c = sub.add_parser("count", help="increment a counter file forever")
    c.add_argument("file")
    c.add_argument("--interval-ms", type=float, default=5.0)
    args = ap.parse_args(argv)
    if args.wait_stdin:
        sys.stdin.buffer.read(1)
    if args.cmd == "alloc":
        allocate(args.mb, args.step_mb, args.step_ms, args.hold, args.verbose)
    else:
        count(args.file, args.interval_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
