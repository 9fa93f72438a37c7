"""`agentshim doctor` on a pure cgroup v2 kernel (runs inside the virtme-ng VM)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.v2


def _v1_memory_mounted() -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        _, _, right = line.partition(" - ")
        parts = right.split()
        if len(parts) >= 3 and parts[0] == "cgroup" and "memory" in parts[2].split(","):
            return True
    return False


def test_doctor_reports_v2_with_memory_in_unified() -> None:
    if _v1_memory_mounted():
        pytest.skip("v1 memory hierarchy mounted: not a pure v2 kernel (runs in the VM tier)")
    beside = Path(sys.executable).parent / "agentshim"
    exe = str(beside) if beside.exists() else shutil.which("agentshim")
    assert exe, "agentshim command not installed"
    proc = subprocess.run([exe, "doctor", "--json"], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["cgroup_mode"] == "v2"
    cgroups = next(c for c in doc["checks"] if c["name"] == "cgroups")
    assert cgroups["status"] == "ok", cgroups
    assert "memory" in cgroups["data"]["unified_controllers"]
    assert doc["controllers"]["memory"] == cgroups["data"]["unified"]
