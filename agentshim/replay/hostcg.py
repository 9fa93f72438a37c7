"""The replay's "host": an outer cgroup with a memory limit, the direct parent of every tenant's
container cgroup (bare tenants: <host>/tenant-N; podman: <host>/libpod-<id> through
``--cgroup-parent``). agentshimd's ladder takes a limited parent cgroup as the host.

Teardown removes the host cgroup from every mounted cgroup hierarchy (podman's runtime also
makes it in cpuset, pids, devices, ... and puts conmon in <host>/conmon).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from agentshim.cgroups import Cgroup, CgroupError, Layout, MemoryLimits, parse_flat_keyed


def _unescape(text: str) -> str:
    """Undo mountinfo's octal escapes (\\040 for a space)."""
    return text.encode().decode("unicode_escape") if "\\" in text else text


def cgroup_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    """Mount points of every cgroup (v1, named v1) and cgroup2 hierarchy."""
    out: list[Path] = []
    for line in mountinfo.read_text().splitlines():
        left, sep, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if sep and len(fields) >= 5 and rfields and rfields[0] in ("cgroup", "cgroup2"):
            mp = Path(_unescape(fields[4]))
            if mp not in out:
                out.append(mp)
    return out


def _post_order(d: Path) -> list[Path]:
    out: list[Path] = []
    with contextlib.suppress(OSError):
        for child in sorted(p for p in d.iterdir() if p.is_dir()):
            out.extend(_post_order(child))
    out.append(d)
    return out


def remove_everywhere(rel: str, kill: bool = True, timeout_s: float = 5.0) -> list[str]:
    """Remove cgroup `rel` and everything below it from every hierarchy; processes still in
    it are SIGKILLed first when kill is True. Returns the directories that could not go."""
    dirs = [m / rel for m in cgroup_mounts() if (m / rel).is_dir()]
    if kill:
        for d in dirs:
            for sub in _post_order(d):
                with contextlib.suppress(OSError, ValueError):
                    for pid in (sub / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
    left: list[str] = []
    deadline = time.monotonic() + timeout_s
    for d in dirs:
        for sub in _post_order(d):
            while sub.exists():
                try:
                    os.rmdir(sub)
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        left.append(str(sub))
                        break
                    time.sleep(0.05)
    return left


class HostCgroup:
    """The outer cgroup at `rel` with memory limit `limit` bytes; with swap=False nothing
    below it swaps."""

    def __init__(self, layout: Layout, rel: str, limit: int, swap: bool = True) -> None:
        self.layout = layout
        self.rel = rel.strip("/")
        self.limit = limit
        self.swap = swap
        self.cg = Cgroup.at(layout, self.rel)

    def create(self) -> None:
        """Make it (memory/freezer/cpuacct/unified as the layer manages) and set the limit."""
        if self.layout.mode == "v2":
            Cgroup.at(self.layout, "").enable_controllers()
        self.cg.create()
        try:
            if self.layout.mode == "v2":
                self.cg.enable_controllers()
            # swap=False: v2 swap.max 0 holds for the whole subtree; v1 swappiness 0 is
            # copied into every cgroup made below it afterwards (tenants, their calls)
            self.cg.set_memory(MemoryLimits(max=self.limit, swap=None if self.swap else 0))
        except BaseException:
            self.destroy()
            raise

    def tenant(self, index: int) -> Cgroup:
        """A bare tenant's container cgroup (not created)."""
        return self.cg.child(f"tenant-{index}")

    def working_set(self) -> int:
        """Memory charged minus inactive file cache (what cannot be dropped cheaply)."""
        usage = self.cg.memory_usage()
        try:
            stat = self.cg.memory_stat()
        except CgroupError:
            return usage
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        return max(0, usage - inactive)

    def pressure_some_avg10(self) -> float:
        """Memory PSI "some" avg10 (percent) of the host cgroup; 0 when unavailable."""
        try:
            return self.cg.pressure("memory").some.avg10
        except (CgroupError, KeyError, AttributeError, OSError):
            return 0.0

    def oom_kills(self) -> int:
        """OOM kills so far in the host cgroup's subtree (v2: memory.events is hierarchical;
        v1: each memcg counts its own victims, so the subtree's counts are summed). Cgroups
        already removed (ended tool calls) are not counted."""
        try:
            if self.layout.mode == "v2":
                return parse_flat_keyed(self.cg.read("memory", "memory.events")).get(
                    "oom_kill", 0)
            total = 0
            for cg in self.cg.walk_post_order():
                with contextlib.suppress(CgroupError):
                    total += parse_flat_keyed(cg.read("memory", "memory.oom_control")).get(
                        "oom_kill", 0)
            return total
        except CgroupError:
            return 0

    def destroy(self) -> list[str]:
        """Remove it from every hierarchy (killing what is left); returns what stayed."""
        return remove_everywhere(self.rel)
