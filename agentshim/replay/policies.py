"""The policies a replay compares (docs/replay.md):

  none       no limit but the host's
  static     memory.max per container: a given size, or each trace's peak or average
  static-fixed  memory.max per container at one round size an operator would pick (2G)
  reactive   a user-space poller (1 s, like oomd) that kills the largest container when the
             host is under pressure
  agentshim  every container managed by agentshimd: tool calls in their own cgroups with the
             declared budgets, priorities (tenant 0 high), the throttle/freeze/kill ladder
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from agentshim.cgroups import Cgroup, CgroupError
from agentshim.replay.hostcg import HostCgroup
from agentshim.replay.schedule import Schedule
from agentshim.units import MIB, parse_size

POLICIES = ("none", "static", "static-fixed", "reactive", "agentshim")
#: The static-fixed policy's memory.max per container: the operators' usual setting.
STATIC_FIXED_DEFAULT = "2G"
#: Memory of the replay's own processes per tenant (two Python interpreters, bash, their page
#: cache), added to a trace's peak wherever a size is derived from it.
TENANT_OVERHEAD = 40 * MIB
#: The reactive poller: how often it looks, and what it calls pressure.
REACTIVE_INTERVAL_S = 1.0
REACTIVE_USAGE_SHARE = 0.90
REACTIVE_PSI_AVG10 = 10.0


def priority_of(index: int) -> str:
    """Tenant 0 is high priority; the others alternate normal and low."""
    if index == 0:
        return "high"
    return "normal" if index % 2 == 1 else "low"


def static_limit(sched: Schedule, spec: str, host_bytes: int = 0, tenants: int = 1) -> int:
    """memory.max of a tenant under the static policy: SIZE, `peak`/`avg` of its trace (plus
    the replay's own overhead), or `share`: an equal share of the host. ValueError for a bad
    spec."""
    word = spec.strip().lower()
    if word == "share":
        if host_bytes <= 0:
            raise ValueError("--static-size share needs the host's size")
        return host_bytes // max(1, tenants)
    if word == "peak":
        return sched.peak_bytes + TENANT_OVERHEAD
    if word in ("avg", "average"):
        return int(sched.avg_bytes) + TENANT_OVERHEAD
    size = parse_size(spec)
    if size <= 0:
        raise ValueError("--static-size must be greater than 0")
    return size


def fixed_limit(spec: str, mem_scale: float = 1.0) -> int:
    """memory.max of every tenant under static-fixed: SIZE x the replay's --mem-scale (the
    same setting relative to the scaled traces). ValueError for a bad spec."""
    size = parse_size(spec)
    if size <= 0:
        raise ValueError("--static-fixed-size must be greater than 0")
    return int(size * mem_scale)


def _round_up(n: float, unit: int = 16 * MIB) -> int:
    return int(math.ceil(n / unit) * unit)


def agentshim_policy(index: int, sched: Schedule, host_bytes: int,
                     freeze_timeout_s: float) -> dict[str, Any]:
    """The agentshim policy of tenant `index`: its priority, the host as its total, the
    agent's own peak (+10%) protected, the ladder with freeze_timeout."""
    fw_peak = max([b for _, b in sched.framework] + [sched.baseline_bytes])
    protect = min(_round_up(fw_peak * 1.1 + TENANT_OVERHEAD / 2), host_bytes // 2)
    return {"priority": priority_of(index),
            "memory": {"total": int(host_bytes), "framework_protect": int(protect),
                       "tool_default": int(min(1 << 30, host_bytes - protect))},
            "on_pressure": ["throttle", "freeze", "kill_tool"],
            "freeze_timeout": f"{freeze_timeout_s:g}s"}


def policy_yaml(policy: dict[str, Any]) -> str:
    """The policy as YAML text."""
    return yaml.safe_dump(policy, sort_keys=False)


class Victim(Protocol):
    """What the reactive poller needs of a tenant."""

    index: int

    def running(self) -> bool: ...

    def container(self) -> Cgroup | None: ...


@dataclass
class Kill:
    """One kill by the reactive poller."""

    t: float
    tenant: int
    usage_bytes: int
    reason: str


class ReactivePoller(threading.Thread):
    """Every second: when the host's working set is at >= 90% (usage_share) of its limit or
    its memory PSI some avg10 >= 10%, SIGKILL the whole container using the most memory (as
    oomd does)."""

    def __init__(self, host: HostCgroup, tenants: Sequence[Victim],
                 log: Callable[[str], None] | None = None,
                 interval_s: float = REACTIVE_INTERVAL_S,
                 usage_share: float = REACTIVE_USAGE_SHARE) -> None:
        super().__init__(daemon=True, name="reactive")
        self.host = host
        self.usage_share = usage_share
        self.tenants = tenants
        self.interval_s = interval_s
        self.log = log
        self.kills: list[Kill] = []
        self.stopping = threading.Event()

    def pressure(self) -> str | None:
        """Why the host is under pressure now, or None."""
        try:
            ws = self.host.working_set()
        except CgroupError:
            return None
        if ws >= self.usage_share * self.host.limit:
            return f"host at {100 * ws / self.host.limit:.0f}% of its memory"
        avg10 = self.host.pressure_some_avg10()
        if avg10 >= REACTIVE_PSI_AVG10:
            return f"host memory pressure some avg10 {avg10:.0f}%"
        return None

    def largest(self) -> tuple[Victim, Cgroup, int] | None:
        """The running tenant whose container uses the most memory."""
        best: tuple[Victim, Cgroup, int] | None = None
        for t in self.tenants:
            cg = t.container()
            if cg is None or not t.running():
                continue
            try:
                usage = cg.memory_usage()
            except CgroupError:
                continue
            if best is None or usage > best[2]:
                best = (t, cg, usage)
        return best

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            why = self.pressure()
            if why is None:
                continue
            victim = self.largest()
            if victim is None:
                continue
            tenant, cg, usage = victim
            try:
                cg.kill()
            except CgroupError:
                continue
            self.kills.append(Kill(time.time(), tenant.index, usage, why))
            if self.log is not None:
                self.log(f"reactive: killed tenant {tenant.index} ({usage / MIB:.0f} MiB): {why}")
            self.stopping.wait(self.interval_s)  # let the kill land before looking again

    def stop(self) -> None:
        """Stop polling (joins the thread)."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=5)
