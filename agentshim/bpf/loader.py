"""Load bpf/memevents.bpf.c with BCC, attach it per HookPlan, and read its events.

    with MemEvents() as mev:
        slot = mev.watch(Path("/sys/fs/cgroup/unified/libpod_parent/<ctr>"))
        while True:
            for ev in mev.poll(100):
                ...   # ev.type, ev.cgroup_id (leaf: tools/call-N), ev.pid, ev.comm, ...

One MemEvents per host (compiling costs ~1 s and ~150 MB RSS): it watches up to max_slots
container subtrees at once. BCC reports compile and verifier errors on fd 2; they are
captured while loading and put into the BpfCompileError raised.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes as ct
import enum
import os
import resource
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentshim import paths
from agentshim.bpf.hooks import (
    AGGREGATED,
    DEFAULT_TYPES,
    EVENT_TYPES,
    Attach,
    HookPlan,
    detect_hook_points,
)

#: The BPF C text, in the checkout (bpf/) or where packages install it.
SOURCE_CANDIDATES = (paths.REPO / "bpf" / "memevents.bpf.c",
                     Path("/usr/share/agentshim/bpf/memevents.bpf.c"))
#: Programs are named ashim_*: what `bpftool prog list` shows of ours.
PROG_PREFIX = "ashim_"


class BpfError(RuntimeError):
    """Base of the errors of this module."""


class BpfUnavailable(BpfError):
    """BPF cannot be used here: bcc missing, not privileged, or no hook point at all."""


class BpfCompileError(BpfError):
    """The BPF C did not compile or load; `log` holds what clang/the verifier said."""

    def __init__(self, message: str, log: str = "") -> None:
        tail = "\n".join(log.strip().splitlines()[-40:])
        super().__init__(message + (f"\n{tail}" if tail else ""))
        self.log = log


#: Event types: the one definition. bpf/memevents.bpf.c gets them as -DEV_<NAME>=<value>.
EventType = enum.IntEnum("EventType", EVENT_TYPES)  # HIGH = 1, MAX = 2, ...


class Source(enum.IntEnum):
    """Where an event came from: the one definition; the C gets -DSRC_<NAME>=<value>."""

    TP_EXEC = 1
    TP_EXIT = 2
    TP_MEMCG_EVENTS = 3
    KP_TRY_CHARGE = 4
    KP_OVER_HIGH = 5
    TP_RECLAIM = 6
    TP_RECLAIM_BEGIN = 7
    TP_MARK_VICTIM = 8
    KP_MEMCG_OOM = 9  # aggregated, unlike the other OOM source


#: What each source is, as `agentshim doctor` and the events show it.
SOURCE_TEXT = {
    Source.TP_EXEC: "tracepoint sched:sched_process_exec",
    Source.TP_EXIT: "tracepoint sched:sched_process_exit",
    Source.TP_MEMCG_EVENTS: "tracepoint memcg:count_memcg_events",
    Source.KP_TRY_CHARGE: "kprobe try_charge_memcg",
    Source.KP_OVER_HIGH: "kprobe mem_cgroup_handle_over_high",
    Source.TP_RECLAIM: "tracepoint vmscan:mm_vmscan_memcg_reclaim_end",
    Source.TP_RECLAIM_BEGIN: "tracepoint vmscan:mm_vmscan_memcg_reclaim_begin",
    Source.TP_MARK_VICTIM: "tracepoint oom:mark_victim",
    Source.KP_MEMCG_OOM: "kprobe mem_cgroup_out_of_memory",
}
TAIL = "aggregate tail"


def constant_cflags() -> list[str]:
    """The -D flags that give the C its EV_* and SRC_* constants (it refuses to build
    without them)."""
    return ([f"-DEV_{t.name}={t.value}" for t in EventType]
            + [f"-DSRC_{s.name}={s.value}" for s in Source])


@dataclass(frozen=True)
class MemEvent:
    """One event. value is in bytes: charged (CHARGE), reclaimed (RECLAIM), the victim's rss
    (OOM from mark_victim); 0 otherwise. count: occurrences aggregated into this event;
    duration_ns: reclaim time (RECLAIM) or memory.high throttle time (HIGH) they took. A
    HIGH tail may have count 0: the throttle time of handlings that ended after the last
    HIGH event. Tails (see is_tail) have pid 0 and no comm."""

    type: EventType
    cgroup_id: int
    pid: int
    comm: str
    value: int
    ts_ns: int
    filename: str = ""
    duration_ns: int = 0
    count: int = 1
    source: str = ""
    slot: int = -1

    @property
    def is_tail(self) -> bool:
        """True for a remainder synthesized while polling (no pid, no comm)."""
        return self.source.endswith(f"({TAIL})")


def _import_bcc() -> Any:
    try:
        import bcc  # type: ignore[import-not-found]
    except ImportError as e:
        raise BpfUnavailable(
            "the bcc Python module is missing: apt-get install python3-bpfcc and use a "
            "virtualenv made with --system-site-packages (the PyPI package 'bcc' is "
            f"unrelated) [{e}]") from e
    return bcc


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what is written to fd 2 (BCC's clang and verifier output) meanwhile."""
    out: list[str] = []
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def _source_text(source: Path | None) -> str:
    for p in [source] if source else SOURCE_CANDIDATES:
        if p is not None and p.exists():
            return p.read_text()
    looked = ", ".join(map(str, SOURCE_CANDIDATES))
    raise BpfUnavailable(f"BPF source not found (looked at {looked})")


class MemEvents:
    """The memory-event BPF programs of one host: compile once, watch container subtrees."""

    def __init__(self, plan: HookPlan | None = None, *, rate_ms: float = 10.0,
                 max_slots: int = 64, ringbuf: bool | None = None,
                 types: Iterable[str] | None = None, source: Path | None = None,
                 ringbuf_pages: int = 64) -> None:
        """plan: hook points (default: detected now); rate_ms: at most one aggregated event
        per cgroup and type in this period; types: event types to report (default
        DEFAULT_TYPES: all but the per-page CHARGE); ringbuf: force the ring buffer (True) or
        the perf buffer (False) instead of what the kernel has."""
        bcc = _import_bcc()
        if os.geteuid() != 0:
            raise BpfUnavailable("loading BPF programs needs root (CAP_BPF + CAP_PERFMON)")
        if plan is None:
            from agentshim.cgroups import detect_layout
            plan = detect_hook_points(memory_v1=detect_layout().memory_v1)
        self.types = frozenset(DEFAULT_TYPES if types is None else types)
        plan = plan.only(self.types)
        if not plan.attach:
            raise BpfUnavailable("no hook point for any event type on this kernel:\n"
                                 + plan.describe())
        self.plan = plan
        self.rate_ns = int(rate_ms * 1_000_000)
        self.max_slots = max_slots
        self.ringbuf = plan.ringbuf if ringbuf is None else ringbuf
        self.lost = 0
        self.failed: dict[str, str] = {}
        self._pending: list[MemEvent] = []
        #: (cgroup id, type) pairs of aggregated events seen lately: where tails can be
        self._active: set[tuple[int, int]] = set()
        self._slots: dict[int, Path] = {}
        self._gen = 1
        self._last_sweep = 0
        page = resource.getpagesize()
        cflags = plan.cflags() + constant_cflags() + [
            f"-DMAX_SLOTS={max_slots}", f"-DRATE_NS={self.rate_ns}ULL",
            f"-DPAGE_BYTES={page}", f"-DRINGBUF_PAGES={ringbuf_pages}",
        ] + (["-DUSE_RINGBUF"] if self.ringbuf else [])
        text = _source_text(source)
        err: Exception | None = None
        with _captured_stderr() as log:
            try:
                self._bpf = bcc.BPF(text=text.encode(), cflags=cflags)
            except Exception as e:
                err = e
        if err is not None:
            raise BpfCompileError(f"compiling bpf/memevents.bpf.c failed: {err}",
                                  "".join(log)) from err
        atexit.unregister(self._bpf.cleanup)  # close() does it; don't pin the object
        try:
            self._load_and_attach(bcc)
            self._bpf[b"generation"][0] = ct.c_uint64(self._gen)
            self._open_output()
        except BaseException:
            self.close()
            raise

    # --- loading --------------------------------------------------------------------------
    def _load_and_attach(self, bcc: Any) -> None:
        kinds = {"tracepoint": bcc.BPF.TRACEPOINT, "kprobe": bcc.BPF.KPROBE,
                 "kretprobe": bcc.BPF.KPROBE}
        for a in self.plan.attach:  # load every program first: verifier errors are bugs
            err: Exception | None = None
            with _captured_stderr() as log:
                try:
                    self._bpf.load_func(a.fn_name.encode(), kinds[a.kind])
                except Exception as e:
                    err = e
            if err is not None:
                raise BpfCompileError(f"the kernel refused BPF program {a.fn_name}: {err}",
                                      "".join(log)) from err
        attached: list[Attach] = []
        for a in self.plan.attach:  # a hook that vanished is skipped, not fatal
            with _captured_stderr() as log:
                try:
                    self._attach(a, detach=False)
                    attached.append(a)
                except Exception as e:
                    self.failed[f"{a.kind}:{a.target}"] = f"{e} {''.join(log).strip()}"
        # memory.high entry without its return (or the reverse) would misfile reclaims
        high = [a for a in attached if a.fn_name in ("ashim_kp_high", "ashim_kr_high")]
        if len(high) == 1:
            with _captured_stderr(), contextlib.suppress(Exception):
                self._attach(high[0], detach=True)
            attached.remove(high[0])
            self.failed[f"{high[0].kind}:{high[0].target}"] = "detached: its pair failed"
        if not attached:
            raise BpfUnavailable("no hook point could be attached: "
                                 + "; ".join(f"{k}: {v}" for k, v in self.failed.items()))

    def _attach(self, a: Attach, detach: bool) -> None:
        target, fn = a.target.encode(), a.fn_name.encode()
        if a.kind == "tracepoint":
            if detach:
                self._bpf.detach_tracepoint(target)
            else:
                self._bpf.attach_tracepoint(tp=target, fn_name=fn)
        elif a.kind == "kprobe":
            if detach:
                self._bpf.detach_kprobe(target, fn)
            else:
                self._bpf.attach_kprobe(event=target, fn_name=fn)
        elif detach:
            self._bpf.detach_kretprobe(target, fn)
        else:
            self._bpf.attach_kretprobe(event=target, fn_name=fn)

    def _open_output(self) -> None:
        table = self._bpf[b"events"]
        if self.ringbuf:
            table.open_ring_buffer(lambda _ctx, data, _size: self._on_event(data))
        else:
            def lost(n: int) -> None:
                self.lost += n
            table.open_perf_buffer(lambda _cpu, data, _size: self._on_event(data),
                                   page_cnt=64, lost_cb=lost)

    def _on_event(self, data: Any) -> None:
        # bcc decodes struct memevent from the C's own definition; the table is looked up
        # each time (a reference kept on self would outlive cleanup() in bcc's __del__)
        c = self._bpf[b"events"].event(data)
        etype = EventType(c.type)
        if etype.name not in self.types:
            return
        if etype.name in AGGREGATED or c.source == Source.KP_MEMCG_OOM:
            self._active.add((c.cgroup_id, c.type))
        try:
            source = SOURCE_TEXT[Source(c.source)]
        except ValueError:
            source = str(c.source)
        self._pending.append(MemEvent(
            type=etype, cgroup_id=c.cgroup_id, pid=c.pid,
            comm=bytes(c.comm).decode(errors="replace"), value=c.value, ts_ns=c.ts_ns,
            filename=bytes(c.filename).decode(errors="replace"), duration_ns=c.duration_ns,
            count=c.count, source=source, slot=c.slot))

    # --- description ----------------------------------------------------------------------
    def plan_description(self) -> str:
        """The hook points chosen (and any that failed to attach), for `agentshim doctor`."""
        text = self.plan.describe()
        text += f"\n  output: {'ring buffer' if self.ringbuf else 'perf buffer'}; " \
                f"aggregation period {self.rate_ns / 1e6:g} ms; {self.max_slots} slots"
        for k, v in self.failed.items():
            text += f"\n  attach failed: {k}: {v}"
        return text

    def program_ids(self) -> list[int]:
        """Kernel ids of our loaded programs (from /proc/self/fdinfo)."""
        ids = []
        for fn in self._bpf.funcs.values() if self._bpf is not None else ():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/self/fdinfo/{fn.fd}").read_text().splitlines():
                    if line.startswith("prog_id:"):
                        ids.append(int(line.split()[1]))
        return sorted(ids)

    # --- watching -------------------------------------------------------------------------
    def watch(self, cgroup_v2_dir: Path) -> int:
        """Report events of every task at or below this cgroup v2 directory; returns the slot
        (carried by its events)."""
        self._require_open()
        free = next((i for i in range(self.max_slots) if i not in self._slots), None)
        if free is None:
            raise BpfError(f"all {self.max_slots} watch slots are in use")
        try:
            fd = os.open(cgroup_v2_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise BpfError(f"cannot open cgroup {cgroup_v2_dir}: {e.strerror}") from e
        try:
            self._bpf[b"watched"][free] = fd
        except Exception as e:
            raise BpfError(f"cannot watch {cgroup_v2_dir} (a cgroup v2 directory is needed, "
                           f"on hybrid hosts the one under the cgroup2 mount): {e}") from e
        finally:
            os.close(fd)
        self._slots[free] = Path(cgroup_v2_dir)
        self._bump_generation()
        return free

    def unwatch(self, slot: int) -> None:
        """Stop reporting the subtree in `slot`; unknown slots are ignored."""
        self._require_open()
        if self._slots.pop(slot, None) is None:
            return
        with contextlib.suppress(KeyError):
            del self._bpf[b"watched"][slot]
        self._bump_generation()

    def watched(self) -> dict[int, Path]:
        """slot -> cgroup directory."""
        return dict(self._slots)

    def _bump_generation(self) -> None:
        self._gen = (self._gen + 1) & 0xFFFFFFFF or 1
        self._bpf[b"generation"][0] = ct.c_uint64(self._gen)

    # --- reading --------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 0) -> list[MemEvent]:
        """Events that arrived (waiting up to timeout_ms for the first), oldest first,
        plus the aggregated remainders of cgroups that fell quiet."""
        self._require_open()
        if self.ringbuf:
            self._bpf.ring_buffer_poll(timeout_ms)
        else:
            self._bpf.perf_buffer_poll(timeout_ms)
        now = time.monotonic_ns()
        if now - self._last_sweep >= self.rate_ns:
            self._last_sweep = now
            self._sweep_tails(now)
        out, self._pending = self._pending, []
        out.sort(key=lambda e: e.ts_ns)
        return out

    def _sweep_tails(self, now: int) -> None:
        """Send what aggregation holds back for (cgroup, type) pairs quiet for a period.

        The kernel sends the first occurrence after a quiet period at once, so only pairs
        that sent an event lately can hold a remainder: those are looked up, nothing else.
        The kernel's last_emit is left alone, so the next occurrence after the quiet
        period again goes out at once (and puts the pair back on the list).
        """
        table = self._bpf[b"cgstate"]
        for cgid, etype_value in list(self._active):
            key = table.Key(cgroup_id=cgid, type=etype_value)
            try:
                st = table[key]
            except KeyError:
                self._active.discard((cgid, etype_value))
                continue
            quiet = now - st.last_seen
            if not st.count and not st.dur:  # dur: HIGH handlings that ended since
                if quiet >= 2 * self.rate_ns:
                    self._active.discard((cgid, etype_value))
                continue
            slot1 = st.gen_slot & 0xFFFFFFFF
            if quiet < self.rate_ns or slot1 - 1 not in self._slots:
                continue
            etype = EventType(etype_value)
            self._pending.append(MemEvent(
                type=etype, cgroup_id=cgid, pid=0, comm="", value=st.value,
                ts_ns=st.last_seen, duration_ns=st.dur, count=st.count,
                source=f"{self.plan.source_of(etype.name)} ({TAIL})", slot=slot1 - 1))
            st.count, st.value, st.dur = 0, 0, 0
            with contextlib.suppress(Exception):
                table[key] = st

    # --- teardown -------------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._bpf is None:
            raise BpfError("MemEvents is closed")

    def close(self) -> None:
        """Detach every program and free the maps; idempotent."""
        bpf = getattr(self, "_bpf", None)
        if bpf is None:
            return
        self._bpf = None
        self._slots.clear()
        with _captured_stderr():
            bpf.cleanup()

    def __enter__(self) -> MemEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
