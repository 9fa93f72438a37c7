"""A whole replay: traces to schedules, the host's size, then each policy in turn on a fresh
host cgroup with fresh tenants; metrics collected, everything removed (docs/replay.md)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentshim.cgroups import detect_layout
from agentshim.enforce.eventlog import read_jsonl
from agentshim.replay import image as replay_image
from agentshim.replay.convert import to_schedule
from agentshim.replay.hostcg import HostCgroup
from agentshim.replay.launch import BareTenant, PodmanTenant, Tenant, TenantSpec
from agentshim.replay.metrics import MIB, TenantOutcome, policy_metrics
from agentshim.replay.monitor import Monitor
from agentshim.replay.policies import (
    POLICIES,
    REACTIVE_USAGE_SHARE,
    STATIC_FIXED_DEFAULT,
    TENANT_OVERHEAD,
    ReactivePoller,
    agentshim_policy,
    fixed_limit,
    policy_yaml,
    priority_of,
    static_limit,
)
from agentshim.replay.schedule import Schedule
from agentshim.replay.service import PrivateAgentshim
from agentshim.trace import find_traces, load_trace

Progress = Callable[[str], None]
#: Share of MemAvailable a replay's host may take at most.
MAX_HOST_SHARE = 0.8
PROGRESS_EVERY_S = 3.0


class ReplayError(RuntimeError):
    """A replay that cannot run as asked; the message says why and what to do."""


@dataclass
class ReplayConfig:
    """What `agentshim replay` was asked to do."""

    traces: list[Path]
    tenants: int | None = None
    host_memory: int | None = None
    overcommit: float | None = None
    speed: float = 1.0
    mem_scale: float = 1.0
    policies: list[str] = field(default_factory=lambda: list(POLICIES))
    static_size: str = "peak"
    static_fixed_size: str = STATIC_FIXED_DEFAULT
    podman: bool = True
    freeze_timeout_s: float = 30.0
    max_duration_s: float | None = None
    reactive_share: float = REACTIVE_USAGE_SHARE
    retries: int = 2
    #: False: the host cgroup (and so every tenant) never swaps, whatever swap the machine has
    swap: bool = True
    keep: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])


@dataclass
class ReplayResult:
    """The comparison: per-policy metrics, the host memory series, the set-up."""

    config: dict[str, Any]
    tenants: list[dict[str, Any]]
    policies: dict[str, dict[str, Any]]
    series: dict[str, list[tuple[float, int]]]
    host_bytes: int

    def to_json(self) -> dict[str, Any]:
        """{"policies": {...}, "tenants": [...], "config": {...}} (no series)."""
        return {"policies": self.policies, "tenants": self.tenants, "config": self.config}


def mem_available() -> int:
    """MemAvailable of this machine in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def swap_devices(path: Path = Path("/proc/swaps")) -> list[dict[str, Any]]:
    """The swap devices /proc/swaps lists (agentshim.swap): device, type, size_kb, used_kb."""
    from agentshim import swap

    return [{"device": d.name, "type": d.kind, "size_kb": d.size // 1024,
             "used_kb": d.used // 1024} for d in swap.devices(path)]


def schedules_for(config: ReplayConfig) -> list[Schedule]:
    """One schedule per tenant: the traces in order, round robin when there are more tenants
    than traces (the first --tenants traces when there are fewer)."""
    paths = find_traces(config.traces)
    n = config.tenants or len(paths)
    if n < 1:
        raise ReplayError("--tenants must be at least 1")
    loaded: dict[int, Schedule] = {}
    out = []
    for i in range(n):
        k = i % len(paths)
        if k not in loaded:
            loaded[k] = to_schedule(load_trace(paths[k]), config.speed, config.mem_scale,
                                    config.max_duration_s)
        out.append(Schedule.from_json(loaded[k].to_json()))
    return out


def host_size(config: ReplayConfig, schedules: list[Schedule]) -> int:
    """--host-memory, or the tenants' peaks (+ the replay's overhead) / --overcommit."""
    if config.host_memory is not None:
        return config.host_memory
    ratio = config.overcommit if config.overcommit is not None else 1.5
    if ratio <= 0:
        raise ReplayError("--overcommit must be greater than 0")
    return int(sum(s.peak_bytes + TENANT_OVERHEAD for s in schedules) / ratio)


class Replay:
    """Runs the policies of one config one after another."""

    def __init__(self, config: ReplayConfig, progress: Progress = print) -> None:
        unknown = [p for p in config.policies if p not in POLICIES]
        if unknown:
            raise ReplayError(f"unknown policy {unknown[0]!r} (known: {', '.join(POLICIES)})")
        self.config = config
        self.progress = progress
        self.layout = detect_layout()
        self.schedules = schedules_for(config)
        self.host_bytes = host_size(config, self.schedules)
        avail = mem_available()
        if avail and self.host_bytes > MAX_HOST_SHARE * avail:
            raise ReplayError(
                f"the host would need {self.host_bytes / MIB:.0f} MiB, more than "
                f"{MAX_HOST_SHARE:.0%} of this machine's available {avail / MIB:.0f} MiB: "
                "use fewer --tenants, --mem-scale < 1 or a smaller --host-memory")
        self.limits = {i: static_limit(s, config.static_size, self.host_bytes,
                                       len(self.schedules))
                       for i, s in enumerate(self.schedules)}
        self.fixed_limit = fixed_limit(config.static_fixed_size, config.mem_scale)
        self.swap = swap_devices() if config.swap else []  # as the run starts
        self.work = Path(tempfile.mkdtemp(prefix=f"agentshim-replay-{config.run_id}-"))
        self.service: PrivateAgentshim | None = None
        self.image = ""

    # --- set-up -------------------------------------------------------------------------
    def prepare(self) -> None:
        """The image (podman) and the private agentshimd (agentshim policy)."""
        if self.config.podman:
            self.image = replay_image.ensure_image(self.progress)
            replay_image.warm_up(self.image)
        if "agentshim" in self.config.policies:
            self.service = PrivateAgentshim(self.work / "shim", swap=self.config.swap)
            self.service.start(self.progress)

    def close(self) -> None:
        """Stop agentshimd; remove the work directory unless --keep."""
        if self.service is not None:
            self.service.stop()
        if self.config.keep:
            self.progress(f"kept the replay's files in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def tenants_info(self) -> list[dict[str, Any]]:
        """The tenants: trace, priority, nominal duration, demand peak/avg, static limit."""
        return [{"tenant": i, "trace": s.name, "priority": priority_of(i),
                 "nominal_s": round(s.duration, 2), "calls": len(s.calls),
                 "demand_peak_mb": round(s.peak_bytes / MIB, 1),
                 "demand_avg_mb": round(s.avg_bytes / MIB, 1),
                 "static_limit_mb": round(self.limits[i] / MIB, 1),
                 "static_fixed_limit_mb": round(self.fixed_limit / MIB, 1)}
                for i, s in enumerate(self.schedules)]

    # --- one policy ---------------------------------------------------------------------
    def _spec(self, policy: str, i: int, sched: Schedule) -> TenantSpec:
        out = self.work / policy / f"t{i}"
        out.mkdir(parents=True)
        out.chmod(0o777)
        sched.save(out / "schedule.json")
        spec = TenantSpec(index=i, cid=f"ashim-replay-{self.config.run_id}-{policy}-t{i}",
                          schedule=sched, out=out, retries=self.config.retries)
        if policy == "static":
            spec.static_limit = self.limits[i]
        if policy == "static-fixed":
            spec.static_limit = self.fixed_limit
        if policy == "agentshim":
            spec.policy_yaml = policy_yaml(agentshim_policy(
                i, sched, self.host_bytes, self.config.freeze_timeout_s))
        return spec

    def _tenant(self, spec: TenantSpec, host: HostCgroup) -> Tenant:
        service = self.service if spec.policy_yaml is not None else None
        if self.config.podman:
            return PodmanTenant(spec, host, self.layout, self.image, service)
        return BareTenant(spec, host, self.layout, service)

    def run_policy(self, policy: str) -> tuple[dict[str, Any], list[tuple[float, int]]]:
        """Run every tenant under `policy`; its metrics and host memory series."""
        host = HostCgroup(self.layout, f"agentshim-replay-{self.config.run_id}-{policy}",
                          self.host_bytes, swap=self.config.swap)
        host.create()
        tenants: list[Tenant] = []
        reactive: ReactivePoller | None = None
        monitor = Monitor(host, tenants)
        try:
            for i, sched in enumerate(self.schedules):
                t = self._tenant(self._spec(policy, i, sched), host)
                t.start()  # type: ignore[attr-defined]
                tenants.append(t)
            if policy == "reactive":
                reactive = ReactivePoller(host, tenants, log=self.progress,
                                          usage_share=self.config.reactive_share)
            t0 = time.time()
            monitor.start(t0)
            if reactive is not None:
                reactive.start()
            for t in tenants:
                t.spec.go.touch()
            timed_out = self._wait(policy, tenants, host, t0)
            wall = time.time() - t0
            monitor.stop()
            if reactive is not None:
                reactive.stop()
            oom_kills = host.oom_kills()
            for t in tenants:
                t.cleanup()  # podman rm: poststop finishes agentshimd's records
            outcomes = [self._outcome(t, monitor, reactive, t.index in timed_out)
                        for t in tenants]
        finally:
            monitor.stop()
            if reactive is not None:
                reactive.stop()
            for t in tenants:
                with contextlib.suppress(Exception):
                    t.cleanup()
            left = host.destroy()
            if left:
                self.progress(f"warning: could not remove {', '.join(left)}")
        kills = len(reactive.kills) if reactive is not None else 0
        return (policy_metrics(outcomes, monitor.series, self.host_bytes, wall, kills,
                               oom_kills), monitor.series)

    def _wait(self, policy: str, tenants: list[Tenant], host: HostCgroup,
              t0: float) -> set[int]:
        """Until every tenant exited or the deadline (3x the longest trace + 30 s); the
        indexes of tenants stopped at the deadline."""
        deadline = t0 + 3 * max(s.duration for s in self.schedules) + 30
        next_report = t0 + PROGRESS_EVERY_S
        while any(t.running() for t in tenants):
            now = time.time()
            if now > deadline:
                late = {t.index for t in tenants if t.running()}
                self.progress(f"[{policy}] deadline reached: stopping tenant(s) "
                              f"{sorted(late)}")
                for t in tenants:
                    if t.running():
                        t.kill()
                return late
            if now >= next_report:
                self.progress(self._status_line(policy, tenants, host, now - t0))
                next_report = now + PROGRESS_EVERY_S
            time.sleep(0.1)
        return set()

    def _status_line(self, policy: str, tenants: list[Tenant], host: HostCgroup,
                     elapsed: float) -> str:
        calls = killed = 0
        for t in tenants:
            for e in read_jsonl(t.spec.out / "tenant.jsonl"):
                if e.get("event") == "call" and e.get("kind") == "bash":
                    calls += 1
                    killed += e.get("exit") == 137
        try:
            ws = host.working_set() / MIB
        except Exception:
            ws = 0.0
        running = sum(t.running() for t in tenants)
        return (f"[{policy}] {elapsed:5.1f} s  host {ws:5.0f}/{self.host_bytes / MIB:.0f} MiB  "
                f"tenants running {running}/{len(tenants)}  tool calls {calls} "
                f"(killed {killed})")

    def _outcome(self, t: Tenant, monitor: Monitor, reactive: ReactivePoller | None,
                 timed_out: bool) -> TenantOutcome:
        spec = t.spec
        lat: list[float] = []
        for f in sorted((spec.out / "lat").glob("*.jsonl")):
            for line in read_jsonl(f):
                lat.extend(float(x) for x in line.get("lat_ms", []))
        records = events = []
        if self.service is not None and spec.policy_yaml is not None:
            cid = getattr(t, "cid", "") or spec.cid
            records = self.service.records(cid)
            events = self.service.events(cid)
        seen = monitor.per_tenant.get(t.index)
        return TenantOutcome(
            index=t.index, name=spec.schedule.name, priority=priority_of(t.index),
            nominal_s=spec.schedule.duration, exit_code=t.poll(),
            log=read_jsonl(spec.out / "tenant.jsonl"), latencies_ms=lat, records=records,
            events=events, psi_stall_s=seen.stall_s if seen else 0.0,
            container_peak_bytes=seen.peak_bytes if seen else 0,
            demand_peak_bytes=spec.schedule.peak_bytes, static_limit=spec.static_limit,
            timed_out=timed_out,
            reactive_kills=sum(1 for k in (reactive.kills if reactive else [])
                               if k.tenant == t.index))

    # --- all ----------------------------------------------------------------------------
    def run(self) -> ReplayResult:
        """Every policy of the config, in order."""
        c = self.config
        info = self.tenants_info()
        self.progress(f"replay {c.run_id}: {len(info)} tenant(s), host memory "
                      f"{self.host_bytes / MIB:.0f} MiB (sum of peaks "
                      f"{sum(x['demand_peak_mb'] for x in info):.0f} MiB), speed {c.speed:g}x, "
                      f"{'podman containers' if c.podman else 'bare cgroups'}, "
                      f"policies {', '.join(c.policies)}")
        for x in info:
            self.progress(f"  tenant {x['tenant']} ({x['priority']}): {x['trace']}, "
                          f"{x['nominal_s']:.0f} s, peak {x['demand_peak_mb']:.0f} MiB, "
                          f"avg {x['demand_avg_mb']:.0f} MiB, {x['calls']} calls")
        policies: dict[str, dict[str, Any]] = {}
        series: dict[str, list[tuple[float, int]]] = {}
        try:
            self.prepare()
            for p in c.policies:
                self.progress(f"[{p}] starting {len(self.schedules)} tenant(s)")
                policies[p], series[p] = self.run_policy(p)
                m = policies[p]
                self.progress(f"[{p}] done in {m['wall_s']:.0f} s: {m['tenants_completed']}/"
                              f"{m['tenants']} completed, {m['agent_deaths']} agent death(s), "
                              f"{m['tool_calls_killed']} tool call(s) killed")
        finally:
            self.close()
        config = {"run_id": c.run_id, "traces": [str(p) for p in c.traces],
                  "tenants": len(self.schedules), "host_mb": round(self.host_bytes / MIB, 1),
                  "overcommit": round(sum(s.peak_bytes + TENANT_OVERHEAD
                                          for s in self.schedules) / self.host_bytes, 3),
                  "speed": c.speed, "mem_scale": c.mem_scale, "static_size": c.static_size,
                  "static_fixed_size": c.static_fixed_size,
                  "podman": c.podman, "freeze_timeout_s": c.freeze_timeout_s,
                  "retries": c.retries,
                  "cgroups": self.layout.mode, "swap": self.swap, "swap_allowed": c.swap}
        return ReplayResult(config=config, tenants=info, policies=policies, series=series,
                            host_bytes=self.host_bytes)


def run_replay(config: ReplayConfig, progress: Progress = print) -> ReplayResult:
    """Run a replay (see Replay)."""
    return Replay(config, progress).run()
