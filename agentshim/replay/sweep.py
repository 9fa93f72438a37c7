"""A density sweep: the same tenants replayed under every policy at several overcommit ratios,
and for each policy the highest ratio at which it still works (docs/replay.md).

A policy *works* at a ratio when no agent died, no tenant timed out and at most
MAX_KILLED_SHARE of its tool-call runs were killed; its highest working overcommit is the
highest ratio of the sweep at which it, and every lower ratio of the sweep, works (a pass above
a failure is noise, not density).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from agentshim.replay.output import metric
from agentshim.replay.runner import ReplayConfig, ReplayResult, run_replay

#: Share of tool-call runs killed that still counts as working.
MAX_KILLED_SHARE = 0.02
#: (key, label, format) of the sweep table's columns after overcommit and policy.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("tool_calls_killed", "calls killed", "{}"),
    ("agent_deaths", "agent deaths", "{}"),
    ("work_lost_cpu_s", "work lost (CPU s)", "{:.1f}"),
    ("completion_ratio", "completion / own", "{:.3f}"),
    ("high_priority_ratio", "tenant 0 / own", "{:.3f}"),
)


def parse_ratios(text: str) -> list[float]:
    """"1,1.5,2" -> [1.0, 1.5, 2.0], sorted, no repeats; ValueError when one is not > 0."""
    try:
        ratios = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"not a list of numbers: {text!r}") from None
    if not ratios or ratios[0] <= 0:
        raise ValueError("overcommit ratios must be numbers greater than 0")
    return ratios


def works(m: dict[str, Any], max_killed_share: float = MAX_KILLED_SHARE) -> bool:
    """No agent death, no time-out, at most max_killed_share of the runs killed."""
    runs = m.get("tool_call_runs") or m.get("tool_calls") or 0
    share = (m.get("tool_calls_killed") or 0) / runs if runs else 0.0
    return (m.get("agent_deaths") or 0) == 0 and not m.get("tenants_timed_out") \
        and share <= max_killed_share


def best_overcommit(points: Sequence[dict[str, Any]],
                    max_killed_share: float = MAX_KILLED_SHARE) -> dict[str, float | None]:
    """Per policy: the highest overcommit of the sweep up to which it works at every point
    (None when it fails at the lowest)."""
    ordered = sorted(points, key=lambda p: p["overcommit"])
    names = list(dict.fromkeys(n for p in ordered for n in p["policies"]))
    best: dict[str, float | None] = {}
    for name in names:
        best[name] = None
        for p in ordered:
            m = p["policies"].get(name)
            if m is None or not works(m, max_killed_share):
                break
            best[name] = p["overcommit"]
    return best


def density_ratio(best: dict[str, float | None]) -> float | None:
    """agentshim's highest working overcommit / the best of none's and static's (None when
    agentshim has none or did not run; inf when neither of the others works anywhere)."""
    mine = best.get("agentshim")
    if mine is None:
        return None
    top = max((best.get(n) or 0.0 for n in ("none", "static") if n in best), default=0.0)
    return mine / top if top else float("inf")


def _cell(m: dict[str, Any], key: str, fmt: str) -> str:
    v = metric(m, key)
    return "-" if v is None else fmt.format(v)


def format_sweep(doc: dict[str, Any]) -> str:
    """The sweep as aligned text: one row per (overcommit, policy), then the best ratios."""
    header = ["overcommit", "host MiB", "policy", *(label for _, label, _ in COLUMNS)]
    rows = []
    for p in doc["points"]:
        for name, m in p["policies"].items():
            rows.append([f"{p['overcommit']:g}x", f"{p['host_mb']:.0f}", name,
                         *(_cell(m, k, f) for k, _, f in COLUMNS)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(widths[i]) if i == 2 else c.rjust(widths[i])
                       for i, c in enumerate(r)).rstrip() for r in [header, *rows]]
    lines.append("")
    share = doc.get("max_killed_share", MAX_KILLED_SHARE)
    lines.append(f"highest overcommit with 0 agent deaths and at most {share:.0%} of tool "
                 "calls killed (and every lower ratio too):")
    for name, r in doc["best"].items():
        lines.append(f"  {name}: " + (f"{r:g}x" if r is not None else
                                       f"none (fails at {doc['points'][0]['overcommit']:g}x)"))
    r = density_ratio(doc["best"])
    if r is not None:
        lines.append(f"agentshim / best of none and static: {r:.2f}x")
    return "\n".join(lines) + "\n"


def run_sweep(config: ReplayConfig, ratios: Sequence[float],
              progress: Callable[[str], None] = print) -> tuple[dict[str, Any],
                                                              list[ReplayResult]]:
    """Run the config's policies at each overcommit ratio; the sweep's document and the
    replays' results."""
    results: list[ReplayResult] = []
    points: list[dict[str, Any]] = []
    for k, r in enumerate(ratios):
        progress(f"sweep: overcommit {r:g}x")
        # a run id per point: a tenant container or host cgroup that outlived its point
        # (removal refused under load) never blocks the next one's names
        cfg = dataclasses.replace(config, overcommit=r, host_memory=None,
                                  run_id=f"{config.run_id}{k}")
        res = run_replay(cfg, progress)
        results.append(res)
        points.append({"overcommit": r, "host_mb": res.config["host_mb"],
                       "policies": res.policies, "swap": res.config.get("swap")})
    best = best_overcommit(points)
    doc = {"points": points, "best": best, "density_ratio": density_ratio(best),
           "max_killed_share": MAX_KILLED_SHARE,
           "tenants": results[0].tenants if results else []}
    return doc, results
