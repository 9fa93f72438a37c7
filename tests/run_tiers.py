"""Run every test tier and report each one's counts, then the total.

    host tier  pytest -m "not v2" on this machine (hybrid cgroups here, real podman/BPF)
    vm tier    tests/vm/run-vm-tier.sh: pytest -m v2 inside a pure cgroup v2 VM

Exit status is non-zero when a tier fails, errors, or runs no test at all.
Usage: python tests/run_tiers.py [--tier host|vm|all] [-- extra pytest args]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "test-results"


def counts(xml: Path) -> dict[str, int] | None:
    """passed/failed/errors/skipped from a JUnit file, or None when it is missing."""
    if not xml.exists():
        return None
    root = ET.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    c = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        for k in c:
            c[k] += int(s.get(k, 0))
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    return c


def line(c: dict[str, int]) -> str:
    return (f"{c['passed']} passed, {c['failures'] + c['errors']} failed, "
            f"{c['skipped']} skipped")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tier", choices=["host", "vm", "all"], default="all")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, tuple[int, dict[str, int] | None]] = {}
    if args.tier in ("host", "all"):
        xml = OUT / "host.xml"
        xml.unlink(missing_ok=True)
        print("== host tier: pytest -m 'not v2' ==", flush=True)
        rc = subprocess.call([sys.executable, "-m", "pytest", "-m", "not v2",
                              f"--junitxml={xml}", *args.pytest_args], cwd=REPO)
        results["host"] = (rc, counts(xml))
    if args.tier in ("vm", "all"):
        print("== vm tier (pure cgroup v2): pytest -m v2 in virtme-ng ==", flush=True)
        rc = subprocess.call([str(REPO / "tests/vm/run-vm-tier.sh"), str(OUT),
                              *args.pytest_args], cwd=REPO)
        results["vm"] = (rc, counts(OUT / "vm.xml"))
    ok = True
    total = {"passed": 0, "failures": 0, "errors": 0, "skipped": 0}
    print()
    for tier, (rc, c) in results.items():
        if c is None:
            print(f"{tier} tier: no results (exit {rc})")
            ok = False
            continue
        print(f"{tier} tier: {line(c)}")
        for k in total:
            total[k] += c[k]
        if rc != 0 or c["passed"] == 0:
            ok = False
    print(f"total: {line(total)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
