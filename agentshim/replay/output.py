"""How a replay is shown: the comparison table (text and markdown) and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentshim.replay.metrics import MIB

#: (key, label, format) of the table's rows.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("tenants_completed", "tenants completed", "{}"),
    ("agent_deaths", "agent deaths", "{}"),
    ("tool_calls_killed", "tool calls killed", "{}"),
    ("calls_retried", "calls re-run after a kill", "{}"),
    ("calls_failed", "calls failed (killed every run)", "{}"),
    ("work_lost_cpu_s", "work lost (CPU s of killed runs)", "{:.1f}"),
    ("throttled_s", "throttled (s)", "{:.1f}"),
    ("frozen_s", "frozen (s)", "{:.1f}"),
    ("alloc_latency_p50_ms", "alloc latency p50 (ms/4MiB)", "{:.2f}"),
    ("alloc_latency_p95_ms", "alloc latency p95 (ms/4MiB)", "{:.2f}"),
    ("completion_s", "completion, mean (s)", "{:.1f}"),
    ("completion_ratio", "completion / trace's own", "{:.3f}"),
    ("high_priority_ratio", "tenant 0 (high) completion / own", "{:.3f}"),
    ("peak_mb", "host peak (MiB)", "{:.0f}"),
    ("avg_mb", "host average (MiB)", "{:.0f}"),
    ("memory_efficiency", "memory efficiency (avg/host)", "{:.2f}"),
    ("reactive_kills", "containers killed by the poller", "{}"),
)


def metric(m: dict[str, Any], key: str) -> Any:
    """A policy's metric by key; "high_priority_ratio" is tenant 0's completion / own."""
    if key == "high_priority_ratio":
        detail = m.get("tenant_detail") or []
        return detail[0].get("completion_ratio") if detail else None
    return m.get(key)


def _cell(m: dict[str, Any], key: str, fmt: str) -> str:
    value = metric(m, key)
    if value is None:
        return "-"
    if key in ("tenants_completed", "agent_deaths") and m.get("tenants") is not None:
        return f"{value}/{m['tenants']}"
    return fmt.format(value)


def table_rows(policies: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison."""
    header = ["metric", *policies]
    rows = [[label, *(_cell(m, key, fmt) for m in policies.values())]
            for key, label, fmt in ROWS]
    return header, rows


def format_table(result: dict[str, Any]) -> str:
    """The comparison as aligned text, with the set-up above it."""
    c = result.get("config", {})
    lines = [f"replay of {c.get('tenants')} tenant(s) on a {c.get('host_mb', 0):.0f} MiB host "
             f"(overcommit {c.get('overcommit', 0):.2f}x: sum of peaks / host), speed "
             f"{c.get('speed')}x, {'podman' if c.get('podman') else 'bare cgroups'} "
             f"({c.get('cgroups')})"]
    for t in result.get("tenants", []):
        lines.append(f"  tenant {t['tenant']} ({t['priority']}): {t['trace']} "
                     f"peak {t['demand_peak_mb']:.0f} MiB avg {t['demand_avg_mb']:.0f} MiB, "
                     f"{t['nominal_s']:.0f} s")
    header, rows = table_rows(result["policies"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append("")
    for r in [header, *rows]:
        lines.append("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(r)).rstrip())
    return "\n".join(lines) + "\n"


def _vs(policies: dict[str, dict[str, Any]], lead: str, key: str, fmt: str) -> str:
    """"<lead's value> vs none's X, static's Y" for one key (- when unknown)."""
    def val(name: str) -> str:
        v = policies[name].get(key)
        return "-" if v is None else fmt.format(v)

    others = [f"{n}'s {val(n)}" for n in policies if n != lead]
    return val(lead) + (" vs " + ", ".join(others) if others else "")


def swap_phrase(swap: list[dict[str, Any]] | None, allowed: bool = True) -> str:
    """What /proc/swaps said during the run, in words."""
    if not allowed:
        return "swap off for this run (--no-swap)"
    if not swap:
        return "no swap (/proc/swaps empty)"
    parts = [f"{d['device']} {d['size_kb'] / 1024:.0f} MiB" for d in swap]
    return "swap on: " + ", ".join(parts)


def outcome_line(result: dict[str, Any]) -> str:
    """One line computed from the numbers: agentshim (or the first policy) against the
    others on tool calls killed, agent deaths, work lost and completion; whether swap was
    present."""
    policies = result.get("policies") or {}
    if not policies:
        return "no policy ran"
    lead = "agentshim" if "agentshim" in policies else next(iter(policies))
    m = policies[lead]
    killed = _vs(policies, lead, "tool_calls_killed", "{}")
    deaths = _vs(policies, lead, "agent_deaths", "{}")
    lost = _vs(policies, lead, "work_lost_cpu_s", "{:.1f}")
    ratio = _vs(policies, lead, "completion_ratio", "{:.2f}x")
    failed = m.get("calls_failed") or 0
    config = result.get("config", {})
    swap = swap_phrase(config.get("swap"), config.get("swap_allowed", True))
    return (f"{lead} killed {killed} tool calls ({m.get('calls_retried') or 0} re-run, "
            f"{failed} failed for good); agent deaths {deaths}; CPU s lost in killed calls "
            f"{lost}; mean completion {ratio}; "
            f"{swap}")


def format_markdown(policies: dict[str, dict[str, Any]]) -> str:
    """The comparison as a markdown table."""
    header, rows = table_rows(policies)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def write_plot(result: dict[str, Any], series: dict[str, list[tuple[float, int]]],
               path: Path) -> Path:
    """Host memory over time per policy (with the host's limit) and bars of the outcomes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = result["policies"]
    host_mb = result.get("config", {}).get("host_mb", 0)
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    ax = axes[0][0]
    for name, pts in series.items():
        if pts:
            ax.plot([t for t, _ in pts], [v / MIB for _, v in pts], label=name, lw=1.2)
    if host_mb:
        ax.axhline(host_mb, color="black", ls="--", lw=1, label="host limit")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("host memory in use (MiB)")
    ax.set_title("host memory (working set) per policy")
    ax.legend(fontsize=8)

    names = list(policies)
    x = range(len(names))

    def bars(ax: Any, keys: list[tuple[str, str]], title: str, ylabel: str) -> None:
        width = 0.8 / len(keys)
        for k, (key, label) in enumerate(keys):
            vals = [float(policies[n].get(key) or 0) for n in names]
            pos = [i + (k - (len(keys) - 1) / 2) * width for i in x]
            b = ax.bar(pos, vals, width, label=label)
            ax.bar_label(b, fmt="%g", fontsize=7)
        ax.set_xticks(list(x), names)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)

    bars(axes[0][1], [("tenants_completed", "tenants completed"),
                      ("agent_deaths", "agent deaths"),
                      ("tool_calls_killed", "tool calls killed"),
                      ("calls_failed", "calls failed")], "outcomes", "count")
    bars(axes[1][0], [("alloc_latency_p50_ms", "p50"), ("alloc_latency_p95_ms", "p95")],
         "allocation latency (one 4 MiB chunk)", "ms")
    bars(axes[1][1], [("throttled_s", "throttled"), ("frozen_s", "frozen")],
         "time stalled (all tenants)", "s")
    c = result.get("config", {})
    fig.suptitle(f"agentshim replay: {c.get('tenants')} tenants, {host_mb:.0f} MiB host, "
                 f"overcommit {c.get('overcommit', 0):.2f}x, speed {c.get('speed')}x")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_sweep_plot(doc: dict[str, Any], path: Path) -> Path:
    """The density sweep: per policy over the overcommit ratios, tool calls killed, agent
    deaths, work lost, mean completion / own and tenant 0's completion / own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(doc["points"], key=lambda p: p["overcommit"])
    xs = [p["overcommit"] for p in points]
    names = list(dict.fromkeys(n for p in points for n in p["policies"]))
    panels = (("tool_calls_killed", "tool calls killed"), ("agent_deaths", "agent deaths"),
              ("work_lost_cpu_s", "work lost (CPU s of killed calls)"),
              ("completion_ratio", "mean completion / trace's own"),
              ("high_priority_ratio", "tenant 0 (high priority) / own"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name in names:
            ys = [metric(p["policies"].get(name, {}), key) for p in points]
            ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=name)
        ax.set_xlabel("overcommit (sum of peaks / host)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    best = ", ".join(f"{n} {r:g}x" if r is not None else f"{n} -"
                     for n, r in doc.get("best", {}).items())
    fig.suptitle(f"density sweep; highest overcommit that works: {best}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
