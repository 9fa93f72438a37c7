"""The per-container broker logic: a wrapper asks to start a tool call, agentshimd checks who is
asking, makes tools/call-N, moves the asker in, and at the end records what the call used.

This module holds the decisions; agentshim/daemon.py holds the sockets and threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agentshim import policy as pol
from agentshim import swap
from agentshim.cgroups import Cgroup, CgroupError, ContainerTree, Layout, MemoryLimits
from agentshim.enforce.admission import PRIORITY_RANK, Admitted, PeakHistory, Waiter, WaitingRoom
from agentshim.enforce.eventlog import EventLog
from agentshim.units import format_duration, format_size

if TYPE_CHECKING:
    from agentshim.enforce.enforcer import Enforcer


#: reply key (never sent): work to do once the reply is out (persisting state, removing the
#: call's cgroup), so the wrapper does not wait for it
AFTER_REPLY = "_after_reply"


class Refused(Exception):
    """A request that is answered with ok:false and the reason."""


class Caller(Protocol):
    """The wrapper at the other end of a start request, as admission sees it."""

    def hold(self, wait_ms: int) -> None:
        """Tell the wrapper to wait up to wait_ms for the real answer."""

    def gone(self) -> bool:
        """True once the wrapper has hung up (its command was interrupted)."""


@dataclass
class ActiveCall:
    """A tool call that started and has no record written yet."""

    seq: int
    pid: int
    command: str
    category: str
    grant: int
    priority: str
    start: float
    cwd: str = ""
    intent: str = ""
    ended_at: float | None = None  # wrapper's end report, or when the reaper saw it empty
    empty_since: float | None = None
    killed: str = ""  # why agentshim killed the call, if it did
    frozen_since: float | None = None  # wall clock, while frozen
    freezes: int = 0
    frozen_s: float = 0.0
    frozen_for_budget: bool = False
    freeze_reason: str = ""
    at_budget_since: float | None = None  # monotonic; reset when a daemon adopts the call
    need: int = 0  # bytes it was expected to need when admitted
    offloaded_bytes: int = 0  # memory pushed out to swap while it was frozen
    offload_s: float = 0.0  # time that took
    admission_wait_s: float = 0.0  # how long it waited at start for room
    admission: str = ""  # why it waited ("" when it did not)
    commands: list[str] = field(default_factory=list)
    #: its record is written but processes it started are still running (`cmd &`): it stays
    #: under the ladder until its cgroup is empty, then the reaper removes it
    recorded: bool = False

    def settle_frozen(self, now: float) -> float:
        """End a frozen stretch (if any) at wall time `now`: add it to frozen_s; its length."""
        if self.frozen_since is None:
            return 0.0
        stretch = max(0.0, now - self.frozen_since)
        self.frozen_s += stretch
        self.frozen_since = None
        return stretch


@dataclass
class ManagedContainer:
    """A registered container: where its tree is, its policy, its calls."""

    id: str
    slot: str
    pid: int
    cgroup: dict[str, str]
    policy_yaml: str
    next_seq: int = 1
    calls: dict[int, ActiveCall] = field(default_factory=dict)
    #: start time of pid (/proc/PID/stat field 22) when registered: a reused pid is not it
    pid_start: int | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    #: its ContainerTree, made on first use (Broker.tree); never persisted
    tree: ContainerTree | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The persisted form (state_dir/containers/ID.json)."""
        return {"id": self.id, "slot": self.slot, "pid": self.pid, "cgroup": self.cgroup,
                "policy_yaml": self.policy_yaml, "next_seq": self.next_seq,
                "pid_start": self.pid_start,
                "calls": {str(k): asdict(v) for k, v in self.calls.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ManagedContainer:
        """Inverse of to_json."""
        known = set(ActiveCall.__dataclass_fields__)
        calls = {int(k): ActiveCall(**{f: x for f, x in v.items() if f in known})
                 for k, v in d.get("calls", {}).items()}
        return cls(id=d["id"], slot=d["slot"], pid=int(d["pid"]), cgroup=dict(d["cgroup"]),
                   policy_yaml=d["policy_yaml"], next_seq=int(d.get("next_seq", 1)), calls=calls,
                   pid_start=None if d.get("pid_start") is None else int(d["pid_start"]))

    def alive(self) -> bool:
        """True while the container's process runs (the same process: its start time
        matches; a zombie counts as gone)."""
        now = proc_start_time(self.pid)
        return now is not None and (self.pid_start is None or now == self.pid_start)


def proc_start_time(pid: int) -> int | None:
    """Start time of a live process (clock ticks since boot, /proc/PID/stat field 22); None
    when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def command_of(argv: list[str]) -> str:
    """The command string of a bash tool-call argv (its -c script), else the argv joined."""
    script = pol.shell_script(argv)
    return script if script is not None else shlex.join(argv[1:])


def within(child: Path, root: Path) -> bool:
    """True when directory child is root or below it."""
    try:
        child.relative_to(root)
        return True
    except ValueError:
        return False


class Broker:
    """Start/end of tool calls for the containers of one daemon."""

    def __init__(self, layout: Layout, state_dir: Path) -> None:
        self.layout = layout
        self.state_dir = state_dir
        (state_dir / "containers").mkdir(parents=True, exist_ok=True)
        (state_dir / "calls").mkdir(parents=True, exist_ok=True)
        self._policies: dict[str, pol.Policy] = {}
        self.events = EventLog(state_dir)
        #: the last records written, for an end report that arrives after the reaper's
        self._recent: dict[tuple[str, int], dict[str, Any]] = {}
        #: set by agentshimd: told of every call's start and end (the ladder)
        self.enforcer: Enforcer | None = None
        self.room = WaitingRoom()
        self.peaks = PeakHistory()
        self._seed_peaks()

    def _seed_peaks(self, tail_bytes: int = 64 << 10) -> None:
        """Feed the peak history from the end of this host's call records."""
        for path in sorted((self.state_dir / "calls").glob("*.jsonl")):
            try:
                with path.open("rb") as f:
                    f.seek(max(0, path.stat().st_size - tail_bytes))
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    rec = json.loads(line)
                    self.peaks.add(str(rec["category"]), int(rec.get("peak_bytes") or 0))

    # --- helpers ----------------------------------------------------------------------------
    def tree(self, ctr: ManagedContainer) -> ContainerTree:
        """The container's cgroup tree (built once per container)."""
        if ctr.tree is None:
            ctr.tree = ContainerTree(Cgroup(self.layout,
                                            {k: Path(v) for k, v in ctr.cgroup.items()}))
        return ctr.tree

    def policy(self, ctr: ManagedContainer) -> pol.Policy:
        """The container's policy (parsed once)."""
        p = self._policies.get(ctr.id)
        if p is None:
            p = pol.load_policy(ctr.policy_yaml)
            self._policies[ctr.id] = p
        return p

    def persist(self, ctr: ManagedContainer) -> None:
        """Write the container's state atomically (a restart picks it up). A state directory
        that is full keeps the last state written; the failure is counted with the dropped
        log lines, never an error for the request."""
        path = self.state_dir / "containers" / f"{ctr.id}.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(ctr.to_json()))
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            self.events.appender.drop(path, e)

    def forget(self, ctr: ManagedContainer) -> None:
        """Drop the persisted state of a container."""
        (self.state_dir / "containers" / f"{ctr.id}.json").unlink(missing_ok=True)
        self._policies.pop(ctr.id, None)

    def load_all(self) -> list[ManagedContainer]:
        """Containers persisted by an earlier daemon."""
        out = []
        for p in sorted((self.state_dir / "containers").glob("*.json")):
            try:
                out.append(ManagedContainer.from_json(json.loads(p.read_text())))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def _peer_cgroup(self, ctr: ManagedContainer, peer_pid: int) -> Path:
        """The peer's cgroup directory (memory hierarchy), checked to be inside ctr's tree."""
        try:
            mine = Cgroup.of_pid(self.layout, peer_pid).primary
        except CgroupError as e:
            raise Refused(f"cannot read the cgroup of pid {peer_pid}") from e
        if not within(mine, self.tree(ctr).root.primary):
            raise Refused("peer is not a process of this container")
        return mine

    # --- requests ---------------------------------------------------------------------------
    def start(self, ctr: ManagedContainer, peer_pid: int, req: dict[str, Any],
              caller: Caller | None = None) -> dict[str, Any]:
        """Handle {"op":"start"}: admit the call (it may wait for room first, telling the
        caller to hold on), make tools/call-N and move the peer into it."""
        mine = self._peer_cgroup(ctr, peer_pid)
        tree = self.tree(ctr)
        if within(mine, tree.tools.primary):
            # a tool call inside a tool call stays in (and is budgeted by) the enclosing call
            return {"ok": True, "call": -1, "nested": True, "notes": ""}
        argv = [str(a) for a in req.get("argv", [])][:4096]
        command = command_of(argv) if argv else ""
        policy = self.policy(ctr)
        category = pol.classify(command, policy)
        intent, warnings = pol.parse_intent(str(req.get("intent") or ""))
        g = pol.grant(policy, category, intent)
        if intent.category and policy.category(intent.category) is not None:
            category = intent.category
        need, need_from = self.peaks.need(category, g.memory, intent.memory)
        waiter, admitted = self._admit(ctr, g.priority, need, policy.admission_timeout, caller)
        if admitted.gave_up:
            raise Refused("the caller went away while its call waited for memory")
        with ctr.lock:
            seq = ctr.next_seq
            ctr.next_seq += 1
            try:
                # swap policy "bound": the grant bounds memory and swap (offload lifts it for
                # a frozen call); "page": the call may swap, as a process without agentshim
                tree.create_call(seq, MemoryLimits(high=g.memory), pid=peer_pid,
                                 bound_swap=self._bound_swap())
            except CgroupError as e:
                self.room.release(waiter)
                raise Refused(f"cannot create the call's cgroup: {e}") from e
            call = ActiveCall(seq=seq, pid=peer_pid, command=command[:4096],
                              category=category, grant=g.memory, priority=g.priority,
                              start=time.time(), cwd=str(req.get("cwd", ""))[:4096],
                              intent=str(req.get("intent") or "")[:512],
                              need=need, admission_wait_s=round(admitted.waited_s, 3),
                              admission=admitted.why if admitted.waited_s or
                              admitted.timed_out else "")
            ctr.calls[seq] = call
        self.room.release(waiter)  # from now on its usage and need are counted as a call's
        if self.enforcer is not None:
            self.enforcer.call_started(ctr, call)
        self.events.write(ctr.id, "call_start", seq, "wrapper", command=call.command[:512],
                          category=category, grant_bytes=g.memory, priority=g.priority)
        notes = [*warnings, *g.notes]
        if call.admission:
            self.events.write(ctr.id, "admission_wait", seq, "admission",
                              waited_s=call.admission_wait_s, why=call.admission,
                              need_bytes=need, need_from=need_from,
                              timed_out=admitted.timed_out)
            end = (f"ran after the {format_duration(policy.admission_timeout)} "
                   "admission_timeout" if admitted.timed_out else "then ran")
            notes.append(f"agentshim: call {seq} waited {admitted.waited_s:.1f} s for memory "
                         f"({call.admission}; it expects {format_size(need)} from the "
                         f"{need_from}), {end}")
        return {"ok": True, "call": seq, "grant": g.memory, "category": category,
                "priority": g.priority, "notes": "; ".join(notes),
                AFTER_REPLY: [lambda: self.persist_locked(ctr)]}

    @staticmethod
    def _bound_swap() -> bool:
        """Whether a new call's budget bounds its swap too (swap policy "bound", or no swap)."""
        return swap.policy() == "bound" or swap.free_bytes() <= 0

    def _admit(self, ctr: ManagedContainer, priority: str, need: int, timeout_s: float,
               caller: Caller | None) -> tuple[Waiter, Admitted]:
        """Wait (bounded) until the call fits its container and its host (admission)."""
        enf = self.enforcer
        w = Waiter(PRIORITY_RANK.get(priority, 1), time.monotonic(), ctr.id)
        if enf is None:
            return w, Admitted()
        host = w.host = enf.host_name(ctr)
        members = enf.host_members(host)
        return w, self.room.admit(
            w, lambda: enf.rooms_of(ctr), need, timeout_s,
            shares=lambda o: o.container == ctr.id or o.host == host or o.container in members,
            gone=caller.gone if caller is not None else (lambda: False),
            on_wait=lambda t, _why: caller.hold(int(t * 1000) + 2000) if caller else None)

    def persist_locked(self, ctr: ManagedContainer) -> None:
        """persist() under the container's lock."""
        with ctr.lock:
            self.persist(ctr)

    def end(self, ctr: ManagedContainer, peer_pid: int, req: dict[str, Any]) -> dict[str, Any]:
        """Handle {"op":"end"}: record the call, remove its cgroup, tell what happened."""
        self._peer_cgroup(ctr, peer_pid)
        try:
            seq = int(req.get("call", -1))
        except (TypeError, ValueError) as e:
            raise Refused("bad call number") from e
        with ctr.lock:
            call = ctr.calls.get(seq)
            if call is None or call.recorded:
                late = self._recent.get((ctr.id, seq))
                if late is not None:  # the reaper wrote it first: still tell the agent
                    return {"ok": True, "notice": self.notice(late)}
                raise Refused(f"no active call {seq} in this container")
            call.ended_at = time.time()
        status = req.get("status")
        later: list[Callable[[], None]] = []
        record = self.finish(ctr, call, exit_status=status if isinstance(status, int) else None,
                             reason="reported", later=later)
        return {"ok": True, "notice": self.notice(record), AFTER_REPLY: later}

    def finish(self, ctr: ManagedContainer, call: ActiveCall, exit_status: int | None,
               reason: str, later: list[Callable[[], None]] | None = None) -> dict[str, Any]:
        """Write the call's record (JSON line), then persist the container and remove the
        call's cgroup once empty (or, given `later`, leave those to the caller: after it has
        answered the wrapper)."""
        cg = self.tree(ctr).call(call.seq)
        cg.wait_empty(timeout_s=1.0)
        call.settle_frozen(time.time())
        try:
            lingering = cg.populated() if cg.exists() else False
        except CgroupError:
            lingering = False
        if self.enforcer is not None and not lingering:
            self.enforcer.call_finished(ctr, call)
        rec: dict[str, Any] = {
            "container": ctr.id, "call": call.seq, "command": call.command,
            "category": call.category, "cwd": call.cwd, "intent": call.intent,
            "grant_bytes": call.grant, "priority": call.priority, "start": call.start,
            "duration_s": round((call.ended_at or time.time()) - call.start, 3),
            "exit": exit_status, "end": reason,
        }
        rec.update(freezes=call.freezes, frozen_s=round(call.frozen_s, 3),
                   commands=call.commands)
        if call.admission:
            rec.update(admission_wait_s=call.admission_wait_s, admission=call.admission)
        if call.offloaded_bytes:
            rec.update(offloaded_bytes=call.offloaded_bytes, offload_s=round(call.offload_s, 3))
        if call.freeze_reason:
            rec["freeze_reason"] = call.freeze_reason
        if call.killed:
            rec["killed_by_agentshim"] = call.killed
        try:
            ev = cg.memory_events()
            rec.update(peak_bytes=cg.memory_peak(), cpu_us=cg.cpu_usage_us(),
                       throttle_events=ev.high, limit_hits=ev.max, oom_kills=ev.oom_kill)
        except CgroupError as e:
            rec["read_error"] = str(e)
        self.peaks.add(call.category, int(rec.get("peak_bytes") or 0))
        with contextlib.suppress(CgroupError, ValueError):
            rec["stall_us"] = cg.pressure().some.total_us
        rec["lingering"] = lingering
        self.events.appender.append(self.state_dir / "calls" / f"{ctr.id}.jsonl",
                                    json.dumps(rec) + "\n")
        self.events.write(ctr.id, "call_end", call.seq, "wrapper" if reason == "reported"
                          else "poll", exit=exit_status, peak_bytes=rec.get("peak_bytes"),
                          duration_s=rec["duration_s"])
        with ctr.lock:
            if lingering:  # the ladder skips ended calls: this one is not done
                call.recorded, call.ended_at = True, None
            else:
                ctr.calls.pop(call.seq, None)
            self._recent[(ctr.id, call.seq)] = rec
            while len(self._recent) > 256:
                self._recent.pop(next(iter(self._recent)))
        self.room.wake()

        def tidy() -> None:
            self.persist_locked(ctr)
            if not lingering:
                with contextlib.suppress(CgroupError):  # poststop removes what is left
                    cg.remove_tree(kill=False)

        if later is not None:
            later.append(tidy)
        else:
            tidy()
        return rec

    def retire(self, ctr: ManagedContainer, call: ActiveCall) -> None:
        """A recorded call's last process is gone: off the ladder, its cgroup removed."""
        if self.enforcer is not None:
            self.enforcer.call_finished(ctr, call)
        with ctr.lock:
            ctr.calls.pop(call.seq, None)
        self.events.write(ctr.id, "call_gone", call.seq, "poll", killed=call.killed or None)
        self.room.wake()
        self.persist_locked(ctr)
        with contextlib.suppress(CgroupError):
            self.tree(ctr).call(call.seq).remove_tree(kill=False)

    @staticmethod
    def notice(rec: dict[str, Any]) -> str:
        """What the wrapper prints on stderr when the call was constrained (else "")."""
        head = f"agentshim: call {rec['call']} ({rec['category']})"
        peak = format_size(int(rec.get("peak_bytes") or 0))
        grant = format_size(int(rec["grant_bytes"]))
        hint = {"test": "run fewer test workers (e.g. pytest -n 2) or set "
                        "AGENTSHIM_INTENT=memory=<size>",
                "install": "install fewer packages at once",
                "build": "build with fewer jobs (make -j2)"}.get(
            rec["category"], "declare what it needs: AGENTSHIM_INTENT=memory=<size>")
        if rec.get("killed_by_agentshim"):
            return (f"{head} was killed: {rec['killed_by_agentshim']} (peak {peak}, budget "
                    f"{grant}); hint: {hint}, or do the work in smaller pieces")
        if rec.get("freezes"):
            return (f"{head} was frozen {rec['freezes']}x for {rec.get('frozen_s', 0):.1f} s "
                    f"({rec.get('freeze_reason', 'memory pressure')}); peak {peak} of its "
                    f"{grant} budget; hint: {hint}")
        if not (rec.get("throttle_events") or rec.get("oom_kills")):
            return ""
        what = "killed at its memory limit" if rec.get("oom_kills") else "throttled"
        return f"{head} was {what}: peak {peak} of its {grant} budget; hint: {hint}"

    def reap(self, ctr: ManagedContainer, grace_s: float = 2.0) -> list[dict[str, Any]]:
        """Finish calls whose cgroup has been empty for grace_s without an end report
        (the wrapper died), returning their records; retire recorded calls whose lingering
        processes are all gone."""
        done = []
        now = time.monotonic()
        for call in list(ctr.calls.values()):
            cg = self.tree(ctr).call(call.seq)
            try:
                empty = not cg.exists() or not cg.populated()
            except CgroupError:
                empty = True
            if call.recorded:
                if empty:
                    self.retire(ctr, call)
                continue
            if not empty:
                call.empty_since = None
                continue
            if call.empty_since is None:
                call.empty_since = now
                continue
            with ctr.lock:
                if now - call.empty_since < grace_s or call.ended_at is not None:
                    continue
                call.ended_at = time.time()
                done.append(self.finish(ctr, call, exit_status=None, reason="no_report"))
        return done
