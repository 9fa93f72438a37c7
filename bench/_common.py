"""What the benchmarks in bench/ share: the command line's --json, percentiles and summaries of
samples, a process's memory, a scratch cgroup under agentshim.bench, a private agentshim for the
podman ones.

Importing it puts the checkout on sys.path (the benchmarks use tests/ helpers). Its name starts
with "_" so that bench/run_all.py does not take it for a benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agentshim.cgroups import Cgroup, detect_layout  # noqa: E402

if TYPE_CHECKING:
    from tests.podman_support import Agentshim

#: the parent of every benchmark's cgroups, removed when the last benchmark leaves it empty
BENCH_PARENT = "agentshim.bench"


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line, described by its docstring's first paragraph; add its own
    options, then parse with parse_args."""
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])


def parse_args(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Add --json PATH (every benchmark's last option, see write_json) and parse argv."""
    ap.add_argument("--json", type=Path, help="write the results here")
    return ap.parse_args(argv)


def write_json(path: Path | None, result: dict[str, Any], announce: bool = False) -> None:
    """Write result as JSON to path (the --json option; nothing when None), saying so on
    stdout with announce."""
    if path is None:
        return
    path.write_text(json.dumps(result, indent=2) + "\n")
    if announce:
        print(f"wrote {path}")


def pct(xs: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of xs, nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(xs: Sequence[float], *stats: str, digits: int = 3,
            mid_median: bool = False) -> dict[str, float]:
    """{"<stat>_ms": value rounded to digits} of samples in ms, in the order asked. A stat is
    "pNN" (NN-th percentile, nearest rank; "p99.9" too), "mean", "min" or "max"; with
    mid_median, p50 is statistics.median instead (the mean of the two middle samples when
    their number is even)."""
    out: dict[str, float] = {}
    for stat in stats:
        if stat == "p50" and mid_median:
            value = statistics.median(xs)
        elif stat.startswith("p"):
            value = pct(xs, float(stat[1:]) / 100)
        elif stat == "mean":
            value = statistics.fmean(xs)
        else:
            value = {"min": min, "max": max}[stat](xs)
        out[f"{stat}_ms"] = round(value, digits)
    return out


def stats_line(label: str, stats: dict[str, float], names: Sequence[str], width: int,
               digits: int) -> str:
    """A report line of summary() statistics: '  LABEL p50 X ms   p90 Y ms ...' (label padded
    to width, values 7 wide with `digits` decimals), for the stats named."""
    return f"  {label:{width}s} " + "   ".join(
        f"{n} {stats[f'{n}_ms']:7.{digits}f} ms" for n in names)


def mem_kb(pid: int) -> dict[str, int]:
    """PSS, USS (private clean + dirty) and RSS of a process, KiB."""
    vals: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        k, _, rest = line.partition(":")
        if k in ("Pss", "Rss", "Private_Clean", "Private_Dirty"):
            vals[k] = int(rest.split()[0])
    return {"pss": vals["Pss"], "uss": vals["Private_Clean"] + vals["Private_Dirty"],
            "rss": vals["Rss"]}


@contextlib.contextmanager
def scratch_cgroup(prefix: str, controllers: bool = True) -> Iterator[Cgroup]:
    """A new cgroup agentshim.bench/<prefix>-<8 hex digits> in every managed hierarchy. On v2
    with `controllers`, the root and agentshim.bench (which hold no process) hand their
    controllers down to it. At the end it is removed with all it holds (processes killed),
    and agentshim.bench too when no other benchmark's cgroup is left in it."""
    layout = detect_layout()
    parent = Cgroup.at(layout, BENCH_PARENT)
    parent.create(exist_ok=True)
    if controllers and layout.mode == "v2":
        Cgroup.at(layout, "").enable_controllers()
        parent.enable_controllers()
    cg = parent.child(f"{prefix}-{uuid.uuid4().hex[:8]}")
    cg.create()
    try:
        yield cg
    finally:
        cg.remove_tree(kill=True)
        if not parent.children():
            parent.remove(missing_ok=True)


@contextlib.contextmanager
def bench_agentshim(prefix: str, bpf: bool = True, python: bool = False) -> Iterator[Agentshim]:
    """Build the wrapper and the test image (python=True: the python one too), then run a
    private agentshim (tests/podman_support.py) in a new temporary directory: use its `hooked`
    podman. agentshimd loads no BPF program unless bpf. At the end its containers (named
    <prefix>-*) are removed, the daemon its hooks started is stopped and the directory
    deleted."""
    from tests.podman_support import Podman, build_images, build_wrapper, private_agentshim

    build_wrapper()
    build_images(Podman(), python=python)
    root = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    try:
        with private_agentshim(root, Podman(), prefix,
                               None if bpf else {"AGENTSHIM_BPF": "0"}) as a:
            yield a
    finally:
        shutil.rmtree(root, ignore_errors=True)
