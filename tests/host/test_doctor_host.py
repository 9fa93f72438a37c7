"""`agentshim doctor` for real on this hybrid host (kernel 6.18, no CAP_SYS_RESOURCE)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


def _agentshim() -> str:
    """The agentshim entry point of the interpreter running the tests (any venv)."""
    beside = Path(sys.executable).parent / "agentshim"
    found = str(beside) if beside.exists() else shutil.which("agentshim")
    if found is None:
        pytest.skip("no agentshim command installed (pip install -e .)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_agentshim(), "doctor", *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    start = time.monotonic()
    proc = _run("--json")
    elapsed = time.monotonic() - start
    assert proc.returncode in (0, 1) and proc.stdout.strip(), f"no JSON: {proc.stderr}"
    out = json.loads(proc.stdout)
    assert proc.returncode == (0 if out["ok"] else 1)
    out["_elapsed"] = elapsed
    return out


def _check(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["checks"] if c["name"] == name)


def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, fs type, super options) of every cgroup mount, read independently."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _src, opts = (right.split() + ["", "", ""])[:3]
        if fstype in ("cgroup", "cgroup2"):
            out.append((left.split()[4], fstype, opts.split(",")))
    return out


def _cap_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


def test_json_shape_and_speed(doc: dict[str, Any]) -> None:
    assert set(doc) >= {"cgroup_mode", "controllers", "checks", "hook_points", "ok"}
    for c in doc["checks"]:
        assert c["status"] in ("ok", "warn", "missing"), c
        assert c["status"] == "ok" or c["fix"], c
    assert doc["_elapsed"] < 3.0, f"doctor took {doc['_elapsed']:.2f} s"


def test_hybrid_mode_when_v1_memory_is_mounted(doc: dict[str, Any]) -> None:
    mounts = _mounts()
    v1_memory = [m for m, fs, opts in mounts if fs == "cgroup" and "memory" in opts]
    unified = [m for m, fs, _ in mounts if fs == "cgroup2"]
    if not (v1_memory and unified):
        pytest.skip("no v1 memory + cgroup2 mounts here: not the hybrid host (the VM tier "
                    "tests pure v2 in tests/v2/test_doctor_v2.py)")
    assert doc["cgroup_mode"] == "hybrid"
    assert doc["controllers"]["memory"] == v1_memory[0]
    assert _check(doc, "cgroups")["status"] == "ok"
    if os.geteuid() == 0:
        assert _check(doc, "cgroupfs")["status"] == "ok"
        assert doc["ok"] is True


def test_psi_min_window(doc: dict[str, Any]) -> None:
    if not Path("/proc/pressure/memory").exists():
        pytest.skip("PSI not enabled on this kernel")
    psi = _check(doc, "psi")
    expected = 1 if _cap_sys_resource() else 2
    assert psi["data"]["psi_min_window_s"] == expected, psi


def test_memcg_tracepoints_present(doc: dict[str, Any]) -> None:
    hooks = doc["hook_points"]
    kernel_has = (Path("/sys/kernel/tracing/events/memcg").is_dir()
                  or "__traceiter_count_memcg_events" in Path("/proc/kallsyms").read_text())
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) >= (6, 18):
        assert kernel_has, "kernel >= 6.18 without memcg tracepoints?"
    if not kernel_has:
        pytest.skip("this kernel has no memcg:* tracepoints")
    assert "memcg:count_memcg_events" in hooks["memcg_tracepoints"]
    assert hooks["choice"] == "memcg tracepoints"
    assert _check(doc, "hook-points")["data"]["choice"] == hooks["choice"]


def test_bcc_importable(doc: dict[str, Any]) -> None:
    probe = subprocess.run([sys.executable, "-c", "import bcc"], capture_output=True,
                           timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"{sys.executable} cannot import bcc (python3-bpfcc, venv with "
                    "--system-site-packages)")
    bcc = _check(doc, "bcc")
    assert bcc["status"] == "ok", bcc
    assert bcc["data"]["version"]


def test_text_mode_prints_one_line_per_check(doc: dict[str, Any]) -> None:
    proc = _run()
    assert proc.returncode == (0 if doc["ok"] else 1), proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(doc["checks"])
    tags = {"ok": "[ ok ]", "warn": "[warn]", "missing": "[MISS]"}
    for line, c in zip(lines, doc["checks"], strict=True):
        assert line.startswith(f"{tags[c['status']]} {c['name']}: "), line
        assert ("-> fix: " in line) == (c["status"] != "ok"), line
