"""The enforcer inside agentshimd: reads the managed cgroups, asks the ladder
(agentshim.enforce.ladder) what to do, does it (freeze, thaw, kill a tool call) and logs it.

What wakes it (each wake runs one evaluation of every scope):
* BPF memory events of managed containers (agentshim.bpf): memory.high/max breaches,
  reclaim, OOM, as they happen; exec events name each call's commands;
* kernel notifications (agentshim.enforce.wakeups): v1 usage thresholds at the ladder's marks,
  v1 OOM notifications of each call (it waits at its budget), v2 memory.events changes of the
  container, its tools/ and each call, PSI triggers;
* a periodic evaluation (every ``interval_s``) as the safety net.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentshim import swap as swap_mod
from agentshim.cgroups import Cgroup, CgroupError
from agentshim.enforce.admission import Room
from agentshim.enforce.eventlog import EventLog
from agentshim.enforce.ladder import Action, CallView, Ladder, ScopeView, Thresholds
from agentshim.enforce.wakeups import Waker, open_kernfs, v1_oom_notifier, v1_threshold

if TYPE_CHECKING:
    from agentshim.broker import ActiveCall, Broker, ManagedContainer

log = logging.getLogger("agentshimd.enforce")
#: oom_score_adj of a tool call's processes by priority: the kernel's OOM killer, if it ever
#: runs, picks tool calls (low priority first) before the agent framework.
OOM_SCORE_ADJ = {"low": 900, "normal": 600, "high": 300}
#: how long an admitted call's expected need holds room beyond its usage (admission)
RESERVE_S = 5.0
STALLED_FRACTION = 0.5  # memory stall share of wall time that counts as "held at budget"
MAX_COMMANDS = 32


@dataclass
class CallState:
    """Transient per-call readings (not persisted)."""

    cgroup_id: int = 0
    nested_ids: list[int] = field(default_factory=list)  # cgroups made inside the call
    high_events: int = -1
    stall: tuple[float, int] | None = None  # (monotonic, PSI some total us)
    last_throttle_log: float = 0.0


@dataclass
class HostScope:
    """The memory the containers of one parent cgroup share."""

    name: str
    cgroup: Cgroup | None  # None: the machine (/proc/meminfo)
    members: set[str] = field(default_factory=set)


def _meminfo() -> tuple[int, int]:
    """(used, total) bytes of the machine: MemTotal - MemAvailable, MemTotal."""
    vals: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in ("MemTotal", "MemAvailable"):
                vals[k] = int(rest.split()[0]) * 1024
    return vals["MemTotal"] - vals["MemAvailable"], vals["MemTotal"]


def host_memory(host: HostScope) -> tuple[int, int]:
    """(usage, limit) bytes of a host scope: its parent cgroup's, or the machine's."""
    if host.cgroup is None:
        return _meminfo()
    return host.cgroup.memory_usage(), limit_of(host.cgroup) or 0


def kernel_pages(free_swap: int | None, limit: int) -> bool:
    """Swap policy "page" (free_swap given) with ample swap for a scope of this limit: the
    kernel pages, agentshim neither holds calls back nor freezes nor kills for that scope."""
    return free_swap is not None and free_swap >= swap_mod.AMPLE_SHARE * limit


def limit_of(cg: Cgroup) -> int | None:
    """The memory limit of a cgroup (smaller of high and max), None when unlimited."""
    lim = cg.memory_limits()
    bound = [x for x in (lim.high, lim.max) if x is not None]
    return min(bound) if bound else None


class Enforcer:
    """Runs the ladder for every container registered with agentshimd."""

    def __init__(self, broker: Broker, events: EventLog, *, thresholds: Thresholds | None = None,
                 interval_s: float = 0.1, use_bpf: bool = True) -> None:
        self.broker = broker
        self.layout = broker.layout
        self.events = events
        self.ladder = Ladder(thresholds)
        self.interval_s = interval_s
        self.use_bpf = use_bpf
        self.containers: dict[str, ManagedContainer] = {}
        self.hosts: dict[str, HostScope] = {}
        self.calls: dict[tuple[str, int], CallState] = {}
        self.by_cgroup_id: dict[int, tuple[str, int]] = {}
        self.bpf_state = "off" if not use_bpf else "loading"
        self.bpf_plan = ""
        self.bpf_program_ids: list[int] = []
        self.evaluations = 0
        self._mev: Any = None
        self._slots: dict[str, int] = {}
        self._bpf_lock = threading.Lock()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._wake_sources: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._psi_keep: dict[str, Any] = {}
        self._to_arm: list[str] = []
        self._arm_lock = threading.Lock()
        self.waker = Waker(self._on_notify)
        #: frozen calls whose memory is to be pushed out to swap (one worker: reclaim is slow)
        self.offload_enabled = os.environ.get("AGENTSHIM_OFFLOAD", "1") != "0"
        self._offloads: queue.Queue[tuple[ManagedContainer, ActiveCall, Cgroup] | None] = \
            queue.Queue()
        self.offloaded_bytes = 0

    # --- lifetime ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the ladder thread (and the BPF thread, which compiles in the background)."""
        t = threading.Thread(target=self._run, name="ladder", daemon=True)
        t.start()
        self._threads.append(t)
        o = threading.Thread(target=self._offload_run, name="offload", daemon=True)
        o.start()
        self._threads.append(o)
        if self.use_bpf:
            b = threading.Thread(target=self._bpf_run, name="bpf", daemon=True)
            b.start()
            self._threads.append(b)

    def stop(self) -> None:
        """Stop the threads; BPF programs are detached and their maps freed."""
        self._stop.set()
        self._wake.set()
        self._offloads.put(None)
        for t in self._threads:
            t.join(timeout=5)
        with self._bpf_lock:
            if self._mev is not None:
                self._mev.close()
                self._mev = None
        self.waker.close()

    def status(self) -> dict[str, Any]:
        """For `agentshim doctor` and the control socket's status."""
        with self._lock:
            levels = {name: st.level for name, st in self.ladder.scopes.items()}
        return {"bpf": self.bpf_state, "bpf_plan": self.bpf_plan,
                "bpf_program_ids": list(self.bpf_program_ids), "evaluations": self.evaluations,
                "levels": levels}

    def wake(self, source: str) -> None:
        """Ask for an evaluation now."""
        with self._lock:
            self._wake_sources.add(source)
        self._wake.set()

    def _on_notify(self, tag: str) -> None:
        self.wake("psi" if tag.startswith("psi:") else "notify")

    # --- registration --------------------------------------------------------------------
    def add_container(self, ctr: ManagedContainer) -> None:
        """Start enforcing for a registered (or adopted) container. Returns at once: the
        kernel notifications (tens of ms on v1) are armed by the ladder thread; the BPF watch
        (one map update) is in place before it returns, so no exec of the container is missed."""
        with self._lock:
            self.containers[ctr.id] = ctr
            self._to_arm.append(ctr.id)
        for call in list(ctr.calls.values()):
            self.call_started(ctr, call)
        self._bpf_watch(ctr)
        self.wake("poll")

    def _arm_pending(self) -> None:
        while True:
            with self._lock:
                if not self._to_arm:
                    return
                cid = self._to_arm.pop(0)
            with self._arm_lock:
                ctr = self.containers.get(cid)
                if ctr is not None:
                    self._arm(ctr)

    def _arm(self, ctr: ManagedContainer) -> None:
        """Kernel notifications for a container and its host; BPF watch."""
        tree = self.broker.tree(ctr)
        policy = self.broker.policy(ctr)
        t = self.ladder.t
        with self._lock:
            host = self._host_of(tree.root)
            host.members.add(ctr.id)
        tag = f"ctr:{ctr.id}"
        try:
            if self.layout.memory_v1:
                mem = tree.root.dir_for("memory")
                for frac in (t.near, t.over, t.thaw):
                    self.waker.add(v1_threshold(mem, int(frac * policy.memory.total)), tag,
                                   "eventfd")
            else:
                for cg in (tree.root, tree.tools):
                    self.waker.add(open_kernfs(cg.dir_for("memory") / "memory.events"), tag,
                                   "kernfs")
        except CgroupError as e:
            log.warning("%s: no kernel notifications (%s); polling only", ctr.id[:12], e)
        with contextlib.suppress(CgroupError, OSError):
            trig = tree.root.psi_trigger(100_000, 1_000_000)
            self.waker.add(trig.fileno(), f"psi:{ctr.id}", "psi", owned=False)
            self._psi_keep[ctr.id] = trig

    def remove_container(self, ctr: ManagedContainer) -> None:
        """Stop enforcing for a container (before its tree is removed)."""
        with self._lock:
            if ctr.id in self._to_arm:
                self._to_arm.remove(ctr.id)
        with self._arm_lock:
            self._disarm(ctr)

    def _disarm(self, ctr: ManagedContainer) -> None:
        self.waker.remove_tag(f"ctr:{ctr.id}")
        self.waker.remove_tag(f"psi:{ctr.id}")
        trig = self._psi_keep.pop(ctr.id, None)
        if trig is not None:
            trig.close()
        for call in list(ctr.calls.values()):
            self._forget_call(ctr, call)
        with self._lock:
            self.containers.pop(ctr.id, None)
            self.ladder.forget(f"container:{ctr.id}")
            for name, host in list(self.hosts.items()):
                host.members.discard(ctr.id)
                if not host.members:
                    self.waker.remove_tag(f"host:{name}")
                    self.hosts.pop(name)
                    self.ladder.forget(name)
        self._bpf_unwatch(ctr)

    def _host_of(self, root: Cgroup) -> HostScope:
        """The host scope of a container cgroup: its parent when that has a memory limit
        below the machine's memory, else the machine."""
        parent = root.parent()
        name = "host:machine"
        limited: Cgroup | None = None
        with contextlib.suppress(CgroupError, OSError):
            lim = limit_of(parent)
            if lim is not None and lim < _meminfo()[1]:
                limited = parent
                name = f"host:{parent.primary}"
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = HostScope(name, limited)
            if limited is not None and lim is not None:
                self._arm_host(host, lim)
        return host

    # --- admission --------------------------------------------------------------------------
    def host_name(self, ctr: ManagedContainer) -> str:
        """The name of the host scope the container shares memory in."""
        with self._lock:
            for h in self.hosts.values():
                if ctr.id in h.members:
                    return h.name
            return self._host_of(self.broker.tree(ctr).root).name

    def host_members(self, name: str) -> set[str]:
        """Ids of the containers of a host scope."""
        with self._lock:
            h = self.hosts.get(name)
            return set(h.members) if h else set()

    def _unfilled(self, ctr: ManagedContainer) -> int:
        """Bytes the container's young calls (started less than RESERVE_S ago) are expected
        to grow by still, each call's expected need less its usage: two calls admitted a
        moment apart must not both count on the same free memory. Older calls (a background
        server left running, a call that lingers after its end) count by their usage only."""
        tree = self.broker.tree(ctr)
        total = 0
        now = time.time()
        for call in list(ctr.calls.values()):
            if call.need <= 0 or call.recorded or now - call.start > RESERVE_S:
                continue
            try:
                total += max(0, call.need - tree.call(call.seq).memory_usage())
            except CgroupError:
                continue
        return total

    def rooms_of(self, ctr: ManagedContainer) -> list[Room]:
        """The container's and its host's memory as they are now, plus what its admitted
        calls are still expected to take, for admission. A scope where the kernel pages
        (kernel_pages) is left out, before anything of it is read."""
        paging = self._ample_swap()
        rooms = []
        unfilled = {ctr.id: self._unfilled(ctr)}
        total = self.broker.policy(ctr).memory.total
        if not kernel_pages(paging, total):
            with contextlib.suppress(CgroupError):
                rooms.append(Room(f"container {ctr.id[:12]}",
                                  self.broker.tree(ctr).root.memory_usage(), total,
                                  len(ctr.calls), unfilled[ctr.id]))
        name = self.host_name(ctr)
        with self._lock:
            host = self.hosts.get(name) or HostScope(name, None)
            members = [self.containers[c] for c in host.members
                       if c in self.containers] or [ctr]
        try:
            usage, limit = host_memory(host)
        except (CgroupError, OSError):
            return rooms
        if kernel_pages(paging, limit):
            return rooms
        for c in members:
            if c.id not in unfilled:
                unfilled[c.id] = self._unfilled(c)
        rooms.append(Room("the host", usage, limit, sum(len(c.calls) for c in members),
                          sum(unfilled[c.id] for c in members)))
        return rooms

    def _arm_host(self, host: HostScope, limit: int) -> None:
        assert host.cgroup is not None
        t = self.ladder.t
        tag = f"host:{host.name}"
        with contextlib.suppress(CgroupError, OSError):
            if self.layout.memory_v1:
                mem = host.cgroup.dir_for("memory")
                for frac in (t.near, t.over, t.thaw):
                    self.waker.add(v1_threshold(mem, int(frac * limit)), tag, "eventfd")
            else:
                self.waker.add(open_kernfs(host.cgroup.dir_for("memory") / "memory.events"),
                               tag, "kernfs")

    # --- calls ---------------------------------------------------------------------------
    def call_started(self, ctr: ManagedContainer, call: ActiveCall) -> None:
        """A call got its cgroup: protect the framework from the OOM killer, watch the call."""
        cg = self.broker.tree(ctr).call(call.seq)
        st = CallState()
        with contextlib.suppress(CgroupError):
            st.cgroup_id = cg.id
        with contextlib.suppress(OSError):
            Path(f"/proc/{call.pid}/oom_score_adj").write_text(
                str(OOM_SCORE_ADJ.get(call.priority, 600)))
        with self._lock:
            self.calls[(ctr.id, call.seq)] = st
            if st.cgroup_id:
                self.by_cgroup_id[st.cgroup_id] = (ctr.id, call.seq)
        tag = f"call:{ctr.id}:{call.seq}"
        with contextlib.suppress(CgroupError, OSError):
            if self.layout.memory_v1:
                self.waker.add(v1_oom_notifier(cg.dir_for("memory")), tag, "eventfd")
            else:
                self.waker.add(open_kernfs(cg.dir_for("memory") / "memory.events"), tag,
                               "kernfs")

    def call_finished(self, ctr: ManagedContainer, call: ActiveCall) -> None:
        """A call's record is about to be written: stop watching it."""
        self._forget_call(ctr, call)

    def _forget_call(self, ctr: ManagedContainer, call: ActiveCall) -> None:
        self.waker.remove_tag(f"call:{ctr.id}:{call.seq}")
        with self._lock:
            st = self.calls.pop((ctr.id, call.seq), None)
            if st is not None:
                for cgid in (st.cgroup_id, *st.nested_ids):
                    self.by_cgroup_id.pop(cgid, None)

    # --- the ladder loop -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            with self._lock:
                sources, self._wake_sources = self._wake_sources, set()
            source = next((s for s in ("bpf", "notify", "psi") if s in sources), "poll")
            try:
                self._arm_pending()
                self.evaluate(source)
            except Exception:
                log.exception("ladder evaluation failed")

    def evaluate(self, source: str = "poll") -> list[Action]:
        """One pass: read every scope, decide, act. Returns the actions taken."""
        now_m, now_w = time.monotonic(), time.time()
        self.evaluations += 1
        with self._lock:
            containers = list(self.containers.values())
            hosts = list(self.hosts.values())
        views: dict[tuple[str, int], CallView] = {}
        scopes: list[ScopeView] = []
        for ctr in containers:
            cviews = self._call_views(ctr, now_m, now_w)
            views.update({v.key: v for v in cviews})
            try:
                usage = self.broker.tree(ctr).root.memory_usage()
            except CgroupError:
                continue
            scopes.append(ScopeView(f"container:{ctr.id}", "container", usage,
                                    self.broker.policy(ctr).memory.total, cviews))
        for host in hosts:
            try:
                usage, limit = host_memory(host)
            except (CgroupError, OSError):
                continue
            members = [v for v in views.values() if v.container in host.members]
            scopes.append(ScopeView(host.name, "host", usage, limit, members))
        actions = self.ladder.budget_actions(list(views.values()), now_m)
        blocked: set[tuple[str, int]] = set()
        paging = self._ample_swap()
        for scope in scopes:
            prev = self.ladder.scopes.get(scope.name)
            before = prev.level if prev else "ok"
            level, acts = self.ladder.scope_actions(scope, now_m)
            if kernel_pages(paging, scope.limit):
                # the kernel pages, as it would with no agentshim: the ladder thaws what it
                # froze and freezes or kills nothing
                acts = [a for a in acts if a.kind == "thaw"]
            if level != before:
                self._log_pressure(scope, level, source)
            if scope.usage >= self.ladder.t.thaw * scope.limit:
                blocked.update(c.key for c in scope.calls)
            actions.extend(acts)
        done = self._apply(actions, views, blocked, source, now_w)
        return done

    @staticmethod
    def _ample_swap() -> int | None:
        """Free swap bytes under swap policy "page" (None under "bound")."""
        return None if swap_mod.policy() == "bound" else swap_mod.free_bytes()

    def _call_views(self, ctr: ManagedContainer, now_m: float, now_w: float) -> list[CallView]:
        policy = self.broker.policy(ctr)
        tree = self.broker.tree(ctr)
        out = []
        for call in list(ctr.calls.values()):
            if call.killed or call.ended_at is not None:
                continue
            cg = tree.call(call.seq)
            try:
                usage = cg.memory_usage()
                self._note_budget(ctr, call, cg, usage, now_m)
            except CgroupError:
                continue
            frozen_m = None if call.frozen_since is None else now_m - (now_w - call.frozen_since)
            cpu_s = 0.0
            if call.frozen_since is not None:  # only frozen calls are ever killed for room
                with contextlib.suppress(CgroupError, OSError, ValueError):
                    cpu_s = cg.cpu_usage_us() / 1e6
            out.append(CallView(
                container=ctr.id, seq=call.seq, priority=call.priority, usage=usage,
                grant=call.grant, freeze_timeout=policy.freeze_timeout,
                can_freeze="freeze" in policy.on_pressure,
                can_kill="kill_tool" in policy.on_pressure, frozen_since=frozen_m,
                at_budget_since=call.at_budget_since, frozen_for_budget=call.frozen_for_budget,
                cpu_s=cpu_s))
        return out

    def _note_budget(self, ctr: ManagedContainer, call: ActiveCall, cg: Cgroup, usage: int,
                     now: float) -> None:
        """Update call.at_budget_since: v1, the call waits at its limit (under_oom); v2, it
        is at its memory.high and spends most of its time stalled on memory. Logs throttling."""
        st = self.calls.get((ctr.id, call.seq))
        if st is None:
            return
        ev = cg.memory_events()
        if st.high_events >= 0 and ev.high > st.high_events and now - st.last_throttle_log >= 1:
            st.last_throttle_log = now
            self.events.write(ctr.id, "throttle", call.seq, "poll", usage_bytes=usage,
                              grant_bytes=call.grant, count=ev.high)
        st.high_events = ev.high
        if self.layout.memory_v1:
            held = ev.under_oom
        else:
            held = False
            with contextlib.suppress(CgroupError, ValueError):
                total = cg.pressure().some.total_us
                if st.stall is not None and usage >= 0.9 * call.grant:
                    dt = now - st.stall[0]
                    held = dt > 0 and (total - st.stall[1]) / 1e6 / dt >= STALLED_FRACTION
                if st.stall is None or now - st.stall[0] >= 0.2:
                    st.stall = (now, total)
                elif call.at_budget_since is not None:
                    held = True  # too soon to judge again: keep the last verdict
        if held and call.at_budget_since is None:
            call.at_budget_since = now
        elif not held:
            call.at_budget_since = None

    def _log_pressure(self, scope: ScopeView, level: str, source: str) -> None:
        kind, _, name = scope.name.partition(":")
        members = ([name] if kind == "container" else
                   sorted(self.hosts[scope.name].members) if scope.name in self.hosts else [])
        for cid in members:
            self.events.write(cid, "pressure", None, source, scope=scope.kind, level=level,
                              usage_bytes=scope.usage, limit_bytes=scope.limit)

    def _apply(self, actions: list[Action], views: dict[tuple[str, int], CallView],
               blocked: set[tuple[str, int]], source: str, now_w: float) -> list[Action]:
        rank = {"kill": 0, "freeze": 1, "thaw": 2}
        chosen: dict[tuple[str, int], Action] = {}
        for a in actions:
            key = (a.container, a.seq)
            if a.kind == "thaw" and key in blocked:
                continue
            if key not in chosen or rank[a.kind] < rank[chosen[key].kind]:
                chosen[key] = a
        done = []
        for key, a in chosen.items():
            ctr = self.containers.get(a.container)
            call = ctr.calls.get(a.seq) if ctr else None
            if ctr is None or call is None or call.killed:
                continue
            cg = self.broker.tree(ctr).call(a.seq)
            view = views.get(key)
            usage = view.usage if view else 0
            try:
                self._do(a, ctr, call, cg, usage, source, now_w)
                done.append(a)
            except CgroupError as e:
                log.warning("%s call %d: %s failed: %s", ctr.id[:12], a.seq, a.kind, e)
        return done

    def _do(self, a: Action, ctr: ManagedContainer, call: ActiveCall, cg: Cgroup, usage: int,
            source: str, now_w: float) -> None:
        with ctr.lock:
            if a.kind == "freeze" and call.frozen_since is None:
                cg.freeze(wait_s=0)
                call.frozen_since = now_w
                call.freezes += 1
                call.frozen_for_budget = a.for_budget
                call.freeze_reason = a.reason
                self.events.write(ctr.id, "freeze", call.seq, source, reason=a.reason,
                                  priority=call.priority, usage_bytes=usage,
                                  grant_bytes=call.grant)
                log.info("%s call %d frozen: %s", ctr.id[:12], call.seq, a.reason)
                if not a.for_budget and self.offload_enabled:
                    self._offloads.put((ctr, call, cg))  # frozen for its scope: make room
            elif a.kind == "thaw" and call.frozen_since is not None:
                cg.thaw(wait_s=0)
                frozen = call.settle_frozen(now_w)
                call.at_budget_since = None
                self.events.write(ctr.id, "thaw", call.seq, source, reason=a.reason,
                                  frozen_s=round(frozen, 3))
                log.info("%s call %d thawed after %.1f s", ctr.id[:12], call.seq, frozen)
            elif a.kind == "kill":
                call.killed = a.reason
                cg.kill()  # (thaws a v1 freezer that holds the call, so the kill lands)
                call.settle_frozen(now_w)
                self.events.write(ctr.id, "kill", call.seq, source, reason=a.reason,
                                  priority=call.priority, usage_bytes=usage)
                log.info("%s call %d killed: %s", ctr.id[:12], call.seq, a.reason)
            else:
                return
            self.broker.persist(ctr)

    # --- offload -------------------------------------------------------------------------
    def _offload_run(self) -> None:
        while True:
            item = self._offloads.get()
            if item is None or self._stop.is_set():
                return
            ctr, call, cg = item
            try:
                if call.frozen_since is None or swap_mod.free_bytes() < swap_mod.OFFLOAD_MIN_FREE:
                    continue
                t0 = time.monotonic()
                n = cg.offload()
                dt = time.monotonic() - t0
                with ctr.lock:
                    if n <= 0:
                        continue
                    call.offloaded_bytes += n
                    call.offload_s += dt
                    self.offloaded_bytes += n
                self.events.write(ctr.id, "offload", call.seq, "ladder", bytes=n,
                                  seconds=round(dt, 3), swap_free_bytes=swap_mod.free_bytes())
                log.info("%s call %d: %d MiB offloaded to swap in %.2f s", ctr.id[:12],
                         call.seq, n >> 20, dt)
                self.wake("notify")
            except Exception:
                log.exception("offload failed")

    # --- BPF -----------------------------------------------------------------------------
    def _bpf_run(self) -> None:
        try:
            from agentshim.bpf import BpfError, MemEvents
        except ImportError as e:  # pragma: no cover - the package is ours
            self.bpf_state = f"unavailable: {e}"
            return
        tid = threading.get_native_id()
        # compiling takes ~1 s of CPU (much more on slow machines): let the broker threads,
        # which answer the wrappers, have the CPU first meanwhile
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, 15)
        try:
            mev = MemEvents(rate_ms=5.0)
        except BpfError as e:
            self.bpf_state = f"unavailable: {str(e).splitlines()[0]}"
            log.warning("BPF memory events unavailable (%s); enforcing with cgroup "
                        "notifications and polling", str(e).splitlines()[0])
            return
        except Exception as e:
            self.bpf_state = f"unavailable: {e}"
            log.exception("loading BPF failed")
            return
        finally:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, 0)
        with self._bpf_lock:
            if self._stop.is_set():
                mev.close()
                return
            self._mev = mev
            self.bpf_plan = mev.plan_description()
            self.bpf_program_ids = mev.program_ids()
            self.bpf_state = "loaded"
        log.info("BPF memory events loaded (%d programs)", len(self.bpf_program_ids))
        with self._lock:
            containers = list(self.containers.values())
        for ctr in containers:
            self._bpf_watch(ctr)
        while not self._stop.is_set():
            # not under _bpf_lock: watch/unwatch (map updates) need not wait for a poll
            try:
                evs = mev.poll(50)
            except Exception:
                log.exception("BPF poll failed")
                evs = []
            if evs:
                self._on_bpf(evs)

    def _bpf_watch(self, ctr: ManagedContainer) -> None:
        with self._bpf_lock:
            if self._mev is None or ctr.id in self._slots:
                return
            try:
                d = self.broker.tree(ctr).root.dir_for("unified")
                self._slots[ctr.id] = self._mev.watch(d)
            except Exception as e:
                log.warning("%s: BPF cannot watch it: %s", ctr.id[:12], e)

    def _bpf_unwatch(self, ctr: ManagedContainer) -> None:
        with self._bpf_lock:
            slot = self._slots.pop(ctr.id, None)
            if self._mev is not None and slot is not None:
                self._mev.unwatch(slot)

    def _resolve_nested(self, ctr_id: str, cgid: int) -> tuple[str, int] | None:
        """The call owning a cgroup made inside it (found by inode under tools/), cached."""
        ctr = self.containers.get(ctr_id)
        if ctr is None:
            return None
        try:
            tools = self.broker.tree(ctr).tools.dir_for("unified")
        except CgroupError:
            return None
        for call in list(ctr.calls.values()):
            top = tools / f"call-{call.seq}"
            for dirpath, _dirs, _files in os.walk(top):
                try:
                    if os.stat(dirpath).st_ino != cgid:
                        continue
                except OSError:
                    continue
                with self._lock:
                    st = self.calls.get((ctr_id, call.seq))
                    if st is not None:
                        st.nested_ids.append(cgid)
                        self.by_cgroup_id[cgid] = (ctr_id, call.seq)
                return (ctr_id, call.seq)
        return None

    def _on_bpf(self, evs: list[Any]) -> None:
        from agentshim.bpf import EventType
        wake = False
        now = time.monotonic()
        for ev in evs:
            with self._lock:
                where = self.by_cgroup_id.get(ev.cgroup_id)
                ctr_id = where[0] if where else next(
                    (c for c, s in self._slots.items() if s == ev.slot), None)
            if ctr_id is None:
                continue
            if where is None:
                where = self._resolve_nested(ctr_id, ev.cgroup_id)
            seq = where[1] if where else None
            ctr = self.containers.get(ctr_id)
            call = ctr.calls.get(seq) if ctr is not None and seq is not None else None
            if ev.type == EventType.EXEC:
                if call is not None and len(call.commands) < MAX_COMMANDS:
                    call.commands.append(os.path.basename(ev.filename) or ev.comm)
                self.events.write(ctr_id, "exec", seq, "bpf", pid=ev.pid,
                                  comm=ev.comm, filename=ev.filename)
            elif ev.type == EventType.OOM:
                self.events.write(ctr_id, "oom", seq, "bpf", pid=ev.pid, comm=ev.comm,
                                  rss_bytes=ev.value)
                wake = True
            elif ev.type in (EventType.HIGH, EventType.MAX, EventType.RECLAIM,
                             EventType.CHARGE):
                wake = True
                st = self.calls.get((ctr_id, seq)) if seq is not None else None
                if ev.type == EventType.HIGH and st is not None and \
                        now - st.last_throttle_log >= 1 and call is not None:
                    st.last_throttle_log = now
                    self.events.write(ctr_id, "throttle", seq, "bpf", count=ev.count,
                                      grant_bytes=call.grant,
                                      throttled_ms=round(ev.duration_ns / 1e6, 3))
        if wake:
            self.wake("bpf")
