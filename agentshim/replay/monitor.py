"""Sampling during a policy run (every 0.1 s): the host cgroup's working set (the plot's
series, peak and average memory) and, per tenant container, its memory use and its memory
PSI stall time (the time throttled)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentshim.cgroups import Cgroup, CgroupError
from agentshim.replay.hostcg import HostCgroup
from agentshim.replay.policies import Victim

INTERVAL_S = 0.1


@dataclass
class TenantSeries:
    """What the monitor saw of one tenant's container."""

    peak_bytes: int = 0
    psi_last_us: int = 0

    @property
    def stall_s(self) -> float:
        """Memory PSI "some" stall time of the container (a new cgroup starts at 0)."""
        return self.psi_last_us / 1e6


@dataclass
class Monitor:
    """Samples the host and tenants from a thread until stop()."""

    host: HostCgroup
    tenants: Sequence[Victim]
    interval_s: float = INTERVAL_S
    t0: float = 0.0
    series: list[tuple[float, int]] = field(default_factory=list)
    per_tenant: dict[int, TenantSeries] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="monitor")

    def start(self, t0: float) -> None:
        """Start sampling; times in the series are seconds since t0."""
        self.t0 = t0
        self._thread.start()

    def sample(self) -> None:
        """Take one sample."""
        now = time.time() - self.t0
        with contextlib.suppress(CgroupError):
            self.series.append((round(now, 3), self.host.working_set()))
        for t in self.tenants:
            cg: Cgroup | None = t.container()
            if cg is None:
                continue
            ts = self.per_tenant.setdefault(t.index, TenantSeries())
            try:
                ts.peak_bytes = max(ts.peak_bytes, cg.memory_usage())
            except CgroupError:
                continue
            try:
                total = cg.pressure("memory").some.total_us
            except (CgroupError, OSError, AttributeError):
                continue
            ts.psi_last_us = max(ts.psi_last_us, total)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """Stop sampling (takes a last sample)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sample()
