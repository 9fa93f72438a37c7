"""The generator of the demo's traces (agentshim/replay/demo_traces/), calibrated to the
published statistics of real agent tasks (../shared/traces/README.md, docs/replay.md):

- the agent framework holds a ~185 MB baseline (a few MB of noise, +0-25 MB of slow growth as
  its context fills);
- memory bursts happen inside tool calls: a test run rises to a plateau of 150-350 MB above
  the agent and bursts to its peak for 1-2 s (ramps of 0.2-0.4 s); installs and Python
  snippets make smaller bursts; git and file commands a few tens of MB (the ratio between the
  heaviest and the lightest Bash calls is over 13x, as measured);
- peaks are scaled to this project's 2-core test host: the published 2-4 GB peaks become
  0.5-1.1 GB bursts, so 5 tenants at 1.5x overcommit fit in ~3 GB and a demo takes minutes;
- think time between calls is compressed (exponential, mean 2.5 s) so a task lasts ~40 s,
  and every task runs its tests at least twice;
- CPU: 1-4% while the agent thinks, 5-25% of a core in calls (task average ~10%, below the
  published 13%).

    python -m agentshim.replay.gendemo OUTDIR [--count 6] [--seed 7] [--duration 40]

writes OUTDIR/demo-N in agentshim's own trace format. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from agentshim.trace.format import write_trace
from agentshim.trace.model import Sample, ToolCall, Trace
from agentshim.units import MB

DT = 0.2  # sampling interval (s): 5 Hz, so a 1-2 s burst has a shape
EPOCH = 1_790_000_000.0
THINK_S = 2.5  # mean think time between calls (s)
MIN_TESTS = 2


@dataclass(frozen=True)
class Kind:
    """A kind of tool call: commands, duration, memory plateau and burst, CPU."""

    category: str
    commands: tuple[str, ...]
    duration: tuple[float, float]
    plateau_mb: tuple[float, float]
    burst_mb: tuple[float, float] | None
    cpu: tuple[float, float]
    weight: float


KINDS = (
    Kind("file_ops", ("grep -rn 'def parse' src/", "ls -la tests/", "cat setup.cfg",
                      "find . -name '*.py' | head -50"), (0.2, 0.8), (5, 30), None,
         (5, 15), 5.0),
    Kind("git", ("git status", "git diff", "git log --oneline -5"), (0.3, 1.0), (10, 40), None,
         (5, 15), 2.0),
    Kind("python", ("python -c 'import pkg; print(pkg.__version__)'", "python repro.py",
                    "python - <<'EOF'\nfrom pkg import core\nprint(core.run())\nEOF"),
         (1.0, 3.0), (40, 120), (120, 280), (8, 20), 2.5),
    Kind("install", ("pip install -e .", "pip install -e '.[test]'"), (3.0, 5.0), (100, 200),
         (300, 500), (10, 20), 0.6),
    Kind("test", ("python -m pytest tests/test_core.py -x -q", "python -m pytest -q",
                  "pytest tests/ -k parse"), (4.0, 7.0), (100, 250), (500, 1100), (12, 25),
         0.8),
)


def _call_memory(rng: random.Random, kind: Kind, duration: float) -> list[float]:
    """Memory (MB above the agent) of one call at every DT step of its duration."""
    n = max(1, round(duration / DT))
    plateau = rng.uniform(*kind.plateau_mb)
    ramp = max(1, round(rng.uniform(0.3, 0.6) / DT))
    out = [plateau * min(1.0, (i + 1) / ramp) for i in range(n)]
    if kind.burst_mb is not None and n >= 3:
        peak = rng.uniform(*kind.burst_mb)
        up = max(1, round(rng.uniform(0.2, 0.4) / DT))
        hold = max(1, round(rng.uniform(1.0, 2.0) / DT))
        length = min(n - 1, up + hold + up)
        first = rng.randint(min(ramp, n - length - 1), max(ramp, n - length - 1))
        for k in range(length):
            if k < up:
                level = plateau + (peak - plateau) * (k + 1) / up
            elif k < up + hold:
                level = peak
            else:
                level = peak - (peak - plateau) * (k - up - hold + 1) / up
            if 0 <= first + k < n:
                out[first + k] = max(out[first + k], level)
    return out


def _plan(rng: random.Random, index: int, duration: float
          ) -> list[tuple[ToolCall, list[float]]]:
    """The calls of one task: kinds by weight, think time between them."""
    t = rng.uniform(1.0, 2.5)
    calls: list[tuple[ToolCall, list[float]]] = []
    while t < duration - 3:
        kind = rng.choices(KINDS, weights=[k.weight for k in KINDS])[0]
        d = rng.uniform(*kind.duration)
        if t + d > duration - 1:
            break
        call = ToolCall(start=EPOCH + t, end=EPOCH + t + d, tool="Bash",
                        command=rng.choice(kind.commands), category=kind.category,
                        id=f"demo{index}-{len(calls)}",
                        extra={"cpu_pct": round(rng.uniform(*kind.cpu), 1)})
        calls.append((call, _call_memory(rng, kind, d)))
        t += d + max(0.4, rng.expovariate(1 / THINK_S))
    return calls


def generate(index: int, seed: int, duration: float = 40.0) -> Trace:
    """One demo task: agent baseline, tool calls with their bursts, samples every DT. A plan
    is drawn until it runs the tests at least twice (as agents do: fail, fix, pass)."""
    rng = random.Random(seed * 1000 + index)
    baseline = rng.gauss(185, 6)
    growth = rng.uniform(0, 25)
    while True:
        calls = _plan(rng, index, duration)
        if sum(1 for c, _ in calls if c.category == "test") >= MIN_TESTS:
            break
    samples: list[Sample] = []
    n = round(duration / DT) + 1
    for i in range(n):
        ts = EPOCH + i * DT
        mem = baseline + growth * i / n + rng.uniform(-2, 2)
        cpu = rng.uniform(1, 4)
        for call, series in calls:
            if call.start <= ts < call.end:
                k = min(len(series) - 1, int((ts - call.start) / DT))
                mem += series[k]
                cpu += float(call.extra.get("cpu_pct", 0))
        samples.append(Sample(t=ts, mem_bytes=int(mem * MB), cpu_pct=round(cpu, 1)))
    return Trace(name=f"demo-{index}", samples=samples, calls=[c for c, _ in calls],
                 meta={"generator": "agentshim.replay.gendemo", "seed": seed,
                       "index": index, "duration_s": duration}).sort()


def main(argv: list[str] | None = None) -> int:
    """Write the demo traces (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m agentshim.replay.gendemo")
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--duration", type=float, default=40.0)
    args = ap.parse_args(argv)
    for i in range(args.count):
        path = write_trace(generate(i, args.seed, args.duration), args.outdir / f"demo-{i}")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
