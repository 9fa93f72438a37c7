"""Which kernel hook points the memory-event programs attach to, chosen at load time.

Nothing is assumed from the kernel version: tracepoints are found in tracefs (and the fields
the programs read are checked in each format file), kprobe targets in
available_filter_functions (or /proc/kallsyms when that is unreadable), and kprobes are used
only when the kernel can create them at all (CONFIG_KPROBES: a kprobe PMU or kprobe_events).

Per event type, the first source available wins:
  EXEC     tracepoint sched:sched_process_exec (filename from its __data_loc field)
  EXIT     tracepoint sched:sched_process_exit
  RECLAIM  tracepoints vmscan:mm_vmscan_memcg_reclaim_begin/end
  MAX      derived from the reclaim tracepoints: memcg reclaim begun by the charging task
           outside memory.high handling
  HIGH     kprobe+kretprobe mem_cgroup_handle_over_high (6.18: __mem_cgroup_handle_over_high)
           with the reclaim tracepoints: a reclaim inside that handling is the breach
  OOM      tracepoint oom:mark_victim | kprobe mem_cgroup_out_of_memory
  CHARGE   tracepoint memcg:count_memcg_events (item PGPGIN) | kprobe try_charge_memcg
The memcg:* tracepoints are memory.stat counter updates, not limit events, which is why HIGH
and MAX cannot come from them. CHARGE fires on every page charged: it is aggregated in the
kernel, and still costs 10-20% on page-fault bound work (docs/bpf.md), so it is not in
DEFAULT_TYPES and must be asked for.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
LEGACY_TRACEFS = Path("/sys/kernel/debug/tracing")
KALLSYMS = Path("/proc/kallsyms")
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")

EVENT_TYPES = ("HIGH", "MAX", "RECLAIM", "OOM", "EXEC", "EXIT", "CHARGE")
#: What MemEvents loads unless told otherwise: everything but the per-page CHARGE.
DEFAULT_TYPES = ("HIGH", "MAX", "RECLAIM", "OOM", "EXEC", "EXIT")

#: Types whose occurrences are summed in the kernel (at most one event per cgroup per period).
AGGREGATED = frozenset({"HIGH", "MAX", "RECLAIM", "CHARGE"})

#: Kernel functions per role; the first name the kernel has is used.
KPROBE_CANDIDATES: Mapping[str, tuple[str, ...]] = {
    "over_high": ("mem_cgroup_handle_over_high", "__mem_cgroup_handle_over_high"),
    "try_charge": ("try_charge_memcg",),
    "memcg_oom": ("mem_cgroup_out_of_memory",),
}

TP_EXEC = "sched:sched_process_exec"
TP_EXIT = "sched:sched_process_exit"
TP_COUNT_EVENTS = "memcg:count_memcg_events"
TP_RECLAIM_BEGIN = "vmscan:mm_vmscan_memcg_reclaim_begin"
TP_RECLAIM_END = "vmscan:mm_vmscan_memcg_reclaim_end"
TP_MARK_VICTIM = "oom:mark_victim"


@dataclass(frozen=True)
class Attach:
    """One attachment: kind is tracepoint, kprobe or kretprobe; fn_name is in the BPF C."""

    kind: str
    target: str
    fn_name: str
    event_type: str


@dataclass(frozen=True)
class HookPlan:
    """The hook points chosen for this kernel and the -D defines that select them in the C."""

    attach: tuple[Attach, ...] = ()
    defines: tuple[str, ...] = ()
    sources: tuple[tuple[str, str], ...] = ()
    kernel: str = ""
    tracefs: Path | None = None
    kprobes_supported: bool = False
    symbol_source: str = "none"
    ringbuf: bool = False
    notes: tuple[str, ...] = field(default=())
    requested: tuple[str, ...] = EVENT_TYPES

    @property
    def event_types(self) -> list[str]:
        """Event types requested and produced by some hook, in EVENT_TYPES order."""
        return [t for t in EVENT_TYPES if self.source_of(t)]

    def source_of(self, event_type: str) -> str:
        """Where events of a type come from ('' when not requested or no source here)."""
        if event_type not in self.requested:
            return ""
        return dict(self.sources).get(event_type, "")

    def cflags(self) -> list[str]:
        """-D flags for the BPF C text."""
        return [f"-D{d}" for d in self.defines]

    def only(self, types: Iterable[str]) -> HookPlan:
        """The same plan restricted to some event types. Hooks other kept types depend on stay
        attached (the loader drops the events of types not asked for)."""
        keep = set(types)
        unknown = keep - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types: {sorted(unknown)}")
        hooks = set(keep)
        if hooks & {"HIGH", "MAX"}:
            hooks.add("RECLAIM")  # HIGH and MAX are told apart at reclaim begin
        if "MAX" in hooks:
            hooks.add("HIGH")  # without the memory.high hook, high reclaim would look like MAX
        attach = tuple(a for a in self.attach if a.event_type in hooks)
        defines = _defines_for(attach, self.defines)
        requested = tuple(t for t in EVENT_TYPES if t in keep)
        return replace(self, attach=attach, defines=defines, requested=requested)

    def describe(self) -> str:
        """Human-readable summary (shown by `agentshim doctor`)."""
        kp = ("kprobes available" if self.kprobes_supported
              else "kprobes unavailable (kernel built without CONFIG_KPROBES)")
        lines = [f"kernel {self.kernel}; tracefs {self.tracefs or 'not mounted'}; {kp}; "
                 f"symbols from {self.symbol_source}; "
                 f"{'ring buffer' if self.ringbuf else 'perf buffer'} output"]
        for t, src in self.sources:
            if not src:
                lines.append(f"  {t:<8} -- no source on this kernel")
            elif t not in self.requested:
                lines.append(f"  {t:<8} -- not requested (available: {src})")
            else:
                agg = ", aggregated" if t in AGGREGATED else ""
                lines.append(f"  {t:<8} {src}{agg}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


#: Which attachments enable which #define in bpf/memevents.bpf.c.
_FN_DEFINES = {
    "ashim_exec": "HAVE_TP_SCHED_EXEC",
    "ashim_exit": "HAVE_TP_SCHED_EXIT",
    "ashim_charge": "HAVE_TP_MEMCG_COUNT_EVENTS",
    "ashim_kp_charge": "USE_KPROBE_TRY_CHARGE",
    "ashim_kp_high": "USE_KPROBE_OVER_HIGH",
    "ashim_rclm_begin": "HAVE_TP_VMSCAN_MEMCG_RECLAIM",
    "ashim_oom_victim": "HAVE_TP_OOM_MARK_VICTIM",
    "ashim_kp_oom": "USE_KPROBE_MEMCG_OOM",
}
#: Field-level defines, kept only while their program is.
_FIELD_DEFINES = {
    "HAVE_EXEC_FILENAME": "ashim_exec",
    "HAVE_MARK_VICTIM_COMM": "ashim_oom_victim",
    "HAVE_MARK_VICTIM_RSS": "ashim_oom_victim",
}


def _defines_for(attach: Iterable[Attach], field_defines: Iterable[str]) -> tuple[str, ...]:
    fns = {a.fn_name for a in attach}
    out = [d for fn, d in _FN_DEFINES.items() if fn in fns]
    out += [d for d in field_defines if _FIELD_DEFINES.get(d) in fns]
    return tuple(dict.fromkeys(out))


# --- probing the kernel ------------------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def ensure_tracefs(path: Path = TRACEFS, mount: bool = True) -> Path | None:
    """A tracefs with an events/ directory: `path` (mounted there if needed and allowed),
    else the legacy debugfs location, else None."""
    if (path / "events").is_dir():
        return path
    if mount and os.geteuid() == 0 and path.is_dir():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["mount", "-t", "tracefs", "tracefs", str(path)],
                           capture_output=True, timeout=10, check=False)
        if (path / "events").is_dir():
            return path
    if (LEGACY_TRACEFS / "events").is_dir():
        return LEGACY_TRACEFS
    return None


_FIELD_RE = re.compile(r"^\s*field:([^;]*);")


def tracepoint_fields(tracefs: Path, name: str) -> dict[str, str] | None:
    """{field name: C type} of tracepoint 'system:event' (common_* left out); None if absent."""
    system, _, event = name.partition(":")
    text = _read(tracefs / "events" / system / event / "format")
    if text is None:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = _FIELD_RE.match(line)
        if not m:
            continue
        decl = m.group(1).strip()
        ctype, _, fname = decl.rpartition(" ")
        fname = fname.split("[", 1)[0]
        if fname and not fname.startswith("common_"):
            fields[fname] = ctype.strip()
    return fields


def kprobes_supported(tracefs: Path | None, kprobe_pmu: Path = KPROBE_PMU) -> bool:
    """True when the kernel can create kprobes (kallsyms lists functions even without)."""
    if kprobe_pmu.exists():
        return True
    return tracefs is not None and (tracefs / "kprobe_events").exists()


def traceable_symbols(wanted: Iterable[str], tracefs: Path | None,
                      kallsyms: Path = KALLSYMS) -> tuple[set[str], str]:
    """The wanted functions the kernel has, from available_filter_functions (functions ftrace
    can hook) or else /proc/kallsyms (text symbols); returns (found, where from)."""
    wanted = set(wanted)
    text = _read(tracefs / "available_filter_functions") if tracefs else None
    if text:
        found = {line.split()[0] for line in text.splitlines() if line.strip()}
        return wanted & found, "available_filter_functions"
    text = _read(kallsyms)
    if text:
        found = set()
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("t", "T") and parts[2] in wanted:
                found.add(parts[2])
        return found, "kallsyms"
    return set(), "none"


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string; (0, 0) if it has none."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def ringbuf_supported(release: str, kallsyms: Path = KALLSYMS) -> bool:
    """BPF ring buffer maps (5.8+): the kernel's ringbuf map ops, or the version if unknown."""
    text = _read(kallsyms)
    if text and re.search(r" ringbuf_map_alloc$", text, re.M):
        return True
    if text and re.search(r" array_map_alloc$", text, re.M):  # symbols readable, no ringbuf
        return False
    return kernel_version(release) >= (5, 8)


# --- the plan ----------------------------------------------------------------------------------

def detect_hook_points(tracefs: Path = TRACEFS, *, kallsyms: Path = KALLSYMS,
                       kprobe_pmu: Path = KPROBE_PMU, release: str | None = None,
                       memory_v1: bool | None = None, mount: bool = True,
                       disable: Iterable[str] = ()) -> HookPlan:
    """Choose the hook points for this kernel (see the module docstring).

    memory_v1: True on hybrid hosts (v1 memory controller, no memory.high anywhere), used
    only to word the notes. With mount=True a missing tracefs is mounted (root only).
    disable: tracepoints ('system:event') or kernel functions to treat as absent, to work
    around a misbehaving hook or to exercise a fallback.
    """
    off = set(disable)
    release = release or os.uname().release
    tfs = ensure_tracefs(tracefs, mount=mount) if mount else (
        tracefs if (tracefs / "events").is_dir() else None)
    can_kprobe = kprobes_supported(tfs, kprobe_pmu)
    wanted = {s for names in KPROBE_CANDIDATES.values() for s in names}
    symbols, sym_source = traceable_symbols(wanted, tfs, kallsyms)

    def sym(role: str) -> str | None:
        if not can_kprobe:
            return None
        return next((s for s in KPROBE_CANDIDATES[role] if s in symbols and s not in off), None)

    def fields(name: str) -> dict[str, str] | None:
        return tracepoint_fields(tfs, name) if tfs and name not in off else None

    attach: list[Attach] = []
    field_defines: list[str] = []
    sources: dict[str, str] = dict.fromkeys(EVENT_TYPES, "")
    notes: list[str] = []
    if off:
        notes.append("disabled on request: " + ", ".join(sorted(off)))
    if tfs is None:
        notes.append("tracefs is not mounted: no tracepoint can be attached "
                     "(mount -t tracefs tracefs /sys/kernel/tracing)")

    f = fields(TP_EXEC)
    if f is not None:
        attach.append(Attach("tracepoint", TP_EXEC, "ashim_exec", "EXEC"))
        sources["EXEC"] = f"tracepoint {TP_EXEC}"
        if f.get("filename", "").startswith("__data_loc"):
            field_defines.append("HAVE_EXEC_FILENAME")
        else:
            sources["EXEC"] += " (no filename field)"
    if fields(TP_EXIT) is not None:
        attach.append(Attach("tracepoint", TP_EXIT, "ashim_exit", "EXIT"))
        sources["EXIT"] = f"tracepoint {TP_EXIT}"

    begin, end = fields(TP_RECLAIM_BEGIN), fields(TP_RECLAIM_END)
    have_reclaim = begin is not None and end is not None and "nr_reclaimed" in end
    if have_reclaim:
        attach.append(Attach("tracepoint", TP_RECLAIM_BEGIN, "ashim_rclm_begin", "RECLAIM"))
        attach.append(Attach("tracepoint", TP_RECLAIM_END, "ashim_rclm_end", "RECLAIM"))
        sources["RECLAIM"] = "tracepoints vmscan:mm_vmscan_memcg_reclaim_begin/end"
        sources["MAX"] = "memcg reclaim begun by the charging task outside memory.high handling"
    else:
        notes.append("RECLAIM/MAX: no vmscan memcg reclaim tracepoints")

    if (s := sym("over_high")) and have_reclaim:
        attach.append(Attach("kprobe", s, "ashim_kp_high", "HIGH"))
        attach.append(Attach("kretprobe", s, "ashim_kr_high", "HIGH"))
        sources["HIGH"] = f"kprobe+kretprobe {s} + memcg reclaim inside it"
    else:
        why = ("kprobes unavailable" if not can_kprobe else
               "no mem_cgroup_handle_over_high" if not s else "no reclaim tracepoints")
        notes.append(f"HIGH: {why}; memory.high throttling is only visible in memory.events"
                     + (" (v1 memory has no memory.high anyway)" if memory_v1 else ""))
        if have_reclaim and not memory_v1:
            notes.append("MAX: without a memory.high hook, reclaim forced by memory.high "
                         "is reported as MAX too")

    f = fields(TP_MARK_VICTIM)
    if f is not None and "pid" in f:
        attach.append(Attach("tracepoint", TP_MARK_VICTIM, "ashim_oom_victim", "OOM"))
        sources["OOM"] = f"tracepoint {TP_MARK_VICTIM} (victim pid"
        if f.get("comm", "").startswith("__data_loc"):
            field_defines.append("HAVE_MARK_VICTIM_COMM")
            sources["OOM"] += ", comm"
        if {"anon_rss", "file_rss", "shmem_rss"} <= f.keys():
            field_defines.append("HAVE_MARK_VICTIM_RSS")
            sources["OOM"] += ", rss"
        sources["OOM"] += ")"
    elif s := sym("memcg_oom"):
        attach.append(Attach("kprobe", s, "ashim_kp_oom", "OOM"))
        sources["OOM"] = f"kprobe {s} (the invoking task, aggregated)"

    f = fields(TP_COUNT_EVENTS)
    if f is not None and {"item", "val"} <= f.keys():
        attach.append(Attach("tracepoint", TP_COUNT_EVENTS, "ashim_charge", "CHARGE"))
        sources["CHARGE"] = f"tracepoint {TP_COUNT_EVENTS} (item PGPGIN)"
    elif s := sym("try_charge"):
        attach.append(Attach("kprobe", s, "ashim_kp_charge", "CHARGE"))
        sources["CHARGE"] = f"kprobe {s}"

    ringbuf = ringbuf_supported(release, kallsyms)
    return HookPlan(attach=tuple(attach), defines=_defines_for(attach, field_defines),
                    sources=tuple(sources.items()), kernel=release, tracefs=tfs,
                    kprobes_supported=can_kprobe, symbol_source=sym_source, ringbuf=ringbuf,
                    notes=tuple(notes))


def plan_description(types: Iterable[str] | None = None, tracefs: Path = TRACEFS) -> str:
    """What MemEvents would attach here, without compiling anything (for `agentshim doctor`;
    needs no bcc, reads tracefs and kallsyms, so root gives the full picture)."""
    from agentshim.cgroups import detect_layout

    try:
        memory_v1: bool | None = detect_layout().memory_v1
    except OSError:
        memory_v1 = None
    plan = detect_hook_points(tracefs, memory_v1=memory_v1, mount=False)
    return plan.only(DEFAULT_TYPES if types is None else types).describe()
