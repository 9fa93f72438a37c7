"""Metrics of a replay, per tenant and per policy: pure functions over what the run collected
(definitions in docs/replay.md).

Inputs per tenant: its own log (tenant.jsonl), the allocation latencies of its calls, its
exit status, the memory PSI stall time of its container, and under agentshim the call records
and events agentshimd wrote. Per policy: the host cgroup's working-set series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentshim.units import MIB

#: Exit status of a tool call killed with SIGKILL (the OOM killer, agentshim, a reactor).
KILLED = 128 + 9
#: The per-policy keys of the JSON document (the issue's list), in table order.
POLICY_KEYS = ("tenants_completed", "agent_deaths", "tool_calls_killed", "calls_retried",
               "calls_failed", "work_lost_cpu_s", "throttled_s", "frozen_s",
               "alloc_latency_p50_ms", "alloc_latency_p95_ms", "completion_s", "peak_mb",
               "avg_mb")


@dataclass
class TenantOutcome:
    """What one tenant did under one policy."""

    index: int
    name: str
    priority: str
    nominal_s: float
    exit_code: int | None
    log: list[dict[str, Any]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    psi_stall_s: float = 0.0
    container_peak_bytes: int = 0
    demand_peak_bytes: int = 0
    static_limit: int | None = None
    timed_out: bool = False
    reactive_kills: int = 0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100, linear interpolation); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def time_average(series: Sequence[tuple[float, float]]) -> float | None:
    """Time-weighted mean of (t, value) samples (each value holds until the next sample)."""
    if not series:
        return None
    if len(series) == 1 or series[-1][0] <= series[0][0]:
        return float(sum(v for _, v in series) / len(series))
    area = sum(v * (b[0] - t) for (t, v), b in zip(series, series[1:], strict=False))
    return area / (series[-1][0] - series[0][0])


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def _event(log: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((e for e in log if e.get("event") == name), None)


def tenant_metrics(o: TenantOutcome) -> dict[str, Any]:
    """Per-tenant detail: completed, agent death, calls, kills, stalls, completion."""
    done = _event(o.log, "done")
    completed = done is not None and o.exit_code == 0
    calls = [e for e in o.log if e.get("event") == "call"]
    runs = [c for c in calls if c.get("kind", "bash") == "bash"]  # every run, re-runs too
    tool_calls = [c for c in runs if c.get("final", True)]  # one per call: its last run
    killed_runs = [c for c in runs if c.get("exit") == KILLED]
    failed = sum(1 for c in tool_calls if c.get("exit") not in (0, KILLED))
    stall_records = sum(float(r.get("stall_us") or 0) for r in o.records) / 1e6
    frozen = sum(float(r.get("frozen_s") or 0) for r in o.records)
    if not frozen:
        frozen = sum(float(e.get("frozen_s") or 0) for e in o.events
                     if e.get("action") == "thaw")
    completion = float(done["wall_s"]) if completed and done is not None else None
    return {
        "tenant": o.index, "trace": o.name, "priority": o.priority,
        "completed": completed, "agent_died": not completed and not o.timed_out,
        "timed_out": o.timed_out, "exit": o.exit_code,
        "tool_calls": len(tool_calls), "tool_calls_run": len(calls),
        "tool_call_runs": len(runs), "tool_calls_killed": len(killed_runs),
        "calls_retried": len({c.get("index") for c in runs if int(c.get("attempt") or 0) > 0}),
        "calls_failed": sum(1 for c in tool_calls if c.get("exit") == KILLED),
        "work_lost_cpu_s": _r(sum(float(c.get("cpu_s") or 0) for c in killed_runs), 3),
        "tool_calls_failed": failed,
        "agentshim_records": len(o.records),
        "killed_by_agentshim": sum(1 for r in o.records if r.get("killed_by_agentshim")),
        "kill_reasons": sorted({str(r["killed_by_agentshim"])[:120] for r in o.records
                                if r.get("killed_by_agentshim")}),
        "freezes": sum(int(r.get("freezes") or 0) for r in o.records)
        or sum(1 for e in o.events if e.get("action") == "freeze"),
        "reactive_kills": o.reactive_kills,
        "throttled_s": _r(max(o.psi_stall_s, stall_records)),
        "frozen_s": _r(frozen),
        "alloc_latency_p50_ms": _r(percentile(o.latencies_ms, 50), 3),
        "alloc_latency_p95_ms": _r(percentile(o.latencies_ms, 95), 3),
        "completion_s": _r(completion),
        "nominal_s": _r(o.nominal_s),
        "completion_ratio": _r(completion / o.nominal_s, 3)
        if completion is not None and o.nominal_s > 0 else None,
        "peak_mb": _r(o.container_peak_bytes / MIB, 1),
        "demand_peak_mb": _r(o.demand_peak_bytes / MIB, 1),
        "static_limit_mb": _r(o.static_limit / MIB, 1) if o.static_limit else None,
    }


def policy_metrics(outcomes: Sequence[TenantOutcome], series: Sequence[tuple[float, int]],
                   host_bytes: int, wall_s: float | None = None,
                   reactive_kills: int = 0, host_oom_kills: int = 0) -> dict[str, Any]:
    """One policy's row: the issue's keys first, then memory efficiency, extras and the
    per-tenant detail."""
    per = [tenant_metrics(o) for o in outcomes]
    lat = [x for o in outcomes for x in o.latencies_ms]
    done = [p["completion_s"] for p in per if p["completion_s"] is not None]
    ratios = [p["completion_ratio"] for p in per if p["completion_ratio"] is not None]
    peak = max((v for _, v in series), default=0)
    avg = time_average([(t, float(v)) for t, v in series])
    return {
        "tenants_completed": sum(1 for p in per if p["completed"]),
        "agent_deaths": sum(1 for p in per if p["agent_died"]),
        "tool_calls_killed": sum(p["tool_calls_killed"] for p in per),
        "calls_retried": sum(p["calls_retried"] for p in per),
        "calls_failed": sum(p["calls_failed"] for p in per),
        "work_lost_cpu_s": _r(sum(p["work_lost_cpu_s"] or 0 for p in per), 3),
        "throttled_s": _r(sum(p["throttled_s"] or 0 for p in per)),
        "frozen_s": _r(sum(p["frozen_s"] or 0 for p in per)),
        "alloc_latency_p50_ms": _r(percentile(lat, 50), 3),
        "alloc_latency_p95_ms": _r(percentile(lat, 95), 3),
        "completion_s": _r(sum(done) / len(done)) if done else None,
        "peak_mb": _r(peak / MIB, 1),
        "avg_mb": _r(avg / MIB, 1) if avg is not None else None,
        "memory_efficiency": _r(avg / host_bytes, 3) if avg is not None and host_bytes else None,
        "completion_ratio": _r(sum(ratios) / len(ratios), 3) if ratios else None,
        "tenants": len(per),
        "tenants_timed_out": sum(1 for p in per if p["timed_out"]),
        "tool_calls": sum(p["tool_calls"] for p in per),
        "tool_call_runs": sum(p["tool_call_runs"] for p in per),
        "killed_share": _r(sum(p["tool_calls_killed"] for p in per)
                           / max(1, sum(p["tool_call_runs"] for p in per)), 4),
        "tool_calls_failed": sum(p["tool_calls_failed"] for p in per),
        "reactive_kills": reactive_kills,
        "host_oom_kills": host_oom_kills,
        "host_mb": _r(host_bytes / MIB, 1),
        "wall_s": _r(wall_s),
        "tenant_detail": per,
    }
