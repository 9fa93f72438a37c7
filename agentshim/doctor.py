"""What this host can do for agentshim: cheap, read-mostly checks behind `agentshim doctor`.

Every check is a small function returning a `Check`; none of them raises (a failing probe
becomes a status). Paths are parameters so tests can point the checks at fixture trees.
Hook-point discovery (kprobe support, traceable symbols) is agentshim.bpf.hooks's, the code
the BPF loader plans with; doctor only reports it.

The only writes doctor makes are undone at once: a probe cgroup is created and removed to
prove cgroupfs is writable, and PSI triggers are armed on a file descriptor that is closed
right away.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentshim import paths
from agentshim.bpf.hooks import (
    KPROBE_CANDIDATES,
    kernel_version,
    kprobes_supported,
    traceable_symbols,
)
from agentshim.cgroups.layout import Layout, detect_layout

OK, WARN, MISSING = "ok", "warn", "missing"

#: Where tracefs may be mounted, preferred first.
TRACEFS_DIRS: tuple[Path, ...] = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
KALLSYMS = Path("/proc/kallsyms")
EVENT_SOURCES = Path("/sys/bus/event_source/devices")
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
HOOK_DIRS: tuple[Path, ...] = (
    Path("/usr/share/containers/oci/hooks.d"),
    Path("/etc/containers/oci/hooks.d"),
)
SETUP_SCRIPT = "packaging/setup-host.sh"

#: Single tracepoints the BPF side may use, besides every memcg:* event.
TRACEPOINTS: tuple[str, ...] = (
    "oom:mark_victim",
    "vmscan:mm_vmscan_memcg_reclaim_begin",
    "vmscan:mm_vmscan_memcg_reclaim_end",
    "sched:sched_process_exec",
    "sched:sched_process_exit",
)
#: Kernel functions the kprobe fallback attaches to (the first name of each role of
#: agentshim.bpf.hooks.KPROBE_CANDIDATES: the loader's own list).
KPROBE_TARGETS: tuple[str, ...] = tuple(names[0] for names in KPROBE_CANDIDATES.values())
CHOICE_MEMCG = "memcg tracepoints"
CHOICE_KPROBES = "kprobes + vmscan tracepoints"
CHOICE_NONE = "none"

CAP_SYS_RESOURCE = 24
SUBPROCESS_TIMEOUT_S = 5.0


@dataclass
class Check:
    """The outcome of one check. `fix` says what to do when the status is not ok."""

    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the check."""
        return asdict(self)


# --- small helpers ---------------------------------------------------------------------------


def _read_text(path: Path) -> str | None:
    """File text, or None when it cannot be read."""
    try:
        return path.read_text(errors="replace")
    except (OSError, ValueError):
        return None


def _errname(e: OSError) -> str:
    """Short symbolic name of an OSError's errno (EPERM, ENOENT, ...)."""
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def _kernel_release() -> str:
    return os.uname().release


def _safe_layout(layout: Layout | None) -> Layout:
    """The given layout, or this host's; a host whose mounts cannot be read has mode 'none'."""
    if layout is not None:
        return layout
    try:
        return detect_layout()
    except (OSError, ValueError):
        return Layout(mode="none")


# --- 1. cgroups ------------------------------------------------------------------------------


def memory_location(layout: Layout) -> Path | None:
    """The hierarchy that holds the memory controller (v1 memory mount or the v2 tree)."""
    if "memory" in layout.v1:
        return layout.v1["memory"]
    if layout.unified is not None and "memory" in layout.unified_controllers:
        return layout.unified
    return None


def _describe_layout(layout: Layout) -> str:
    parts: list[str] = []
    v1 = dict(sorted(layout.v1.items(), key=lambda kv: (kv[0] != "memory", kv[0])))
    parts += [f"{c}: {p}" for c, p in v1.items()]
    if layout.unified is not None:
        ctrls = " ".join(sorted(layout.unified_controllers)) or "no controllers"
        parts.append(f"cgroup2: {layout.unified} [{ctrls}]")
    return f"{layout.mode} ({', '.join(parts) or 'no cgroup mounts'})"


def check_cgroups(layout: Layout | None = None) -> Check:
    """cgroup mode and where each controller lives; the memory controller is required."""
    layout = _safe_layout(layout)
    data = {
        "mode": layout.mode,
        "unified": str(layout.unified) if layout.unified else None,
        "unified_controllers": sorted(layout.unified_controllers),
        "v1": {c: str(p) for c, p in sorted(layout.v1.items())},
        "controllers": layout.controller_locations(),
    }
    detail = _describe_layout(layout)
    if memory_location(layout) is None:
        return Check("cgroups", MISSING, f"{detail}: no memory controller",
                     "enable the memory controller (boot without cgroup_disable=memory; on v2 "
                     "it must be listed in the root cgroup.controllers)", True, data)
    return Check("cgroups", OK, detail, required=True, data=data)


def _probe_mkdir(root: Path) -> str | None:
    """Create and remove a probe cgroup under root; None when that worked, else the error."""
    probe = root / f"agentshim-doctor-{os.getpid()}"
    try:
        probe.mkdir()
    except FileExistsError:
        pass
    except OSError as e:
        return _errname(e)
    try:
        probe.rmdir()
    except OSError as e:
        return f"created but not removed ({_errname(e)}): rmdir {probe}"
    return None


def check_cgroupfs_writable(layout: Layout | None = None) -> Check:
    """Really create a child cgroup where agentshim needs one (memory hierarchy, v2 tree)."""
    layout = _safe_layout(layout)
    mem = memory_location(layout)
    targets: dict[str, Path] = {}
    if mem is not None:
        targets["memory"] = mem
    if layout.unified is not None and layout.unified != mem:
        targets["cgroup2"] = layout.unified
    if "freezer" in layout.v1:
        targets["freezer"] = layout.v1["freezer"]
    if not targets:
        return Check("cgroupfs", MISSING, "no cgroup hierarchy to write to",
                     "mount cgroupfs (cgroup2 at /sys/fs/cgroup)", True)
    errors = {what: _probe_mkdir(path) for what, path in targets.items()}
    data = {"probed": {w: str(p) for w, p in targets.items()},
            "errors": {w: e for w, e in errors.items() if e}}
    fix = ("run as root on the host (inside a container /sys/fs/cgroup is read-only unless "
           "the cgroup is delegated)")
    if mem is not None and errors.get("memory"):
        return Check("cgroupfs", MISSING,
                     f"cannot create a cgroup in {mem}: {errors['memory']}", fix, True, data)
    bad = [f"{w} ({targets[w]}: {e})" for w, e in errors.items() if e]
    if bad:
        return Check("cgroupfs", WARN, "not writable: " + ", ".join(bad), fix, True, data)
    return Check("cgroupfs", OK, "writable (" + ", ".join(str(p) for p in targets.values()) + ")",
                 required=True, data=data)


# --- 2. PSI ----------------------------------------------------------------------------------


def psi_trigger_allowed(path: Path, window_us: int, stall_us: int = 150_000) -> str | None:
    """Arm (and at once disarm) a `some` trigger on path; None when accepted, else errno name."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return _errname(e)
    try:
        # The kernel overwrites the last byte written with NUL: send the terminator ourselves.
        os.write(fd, f"some {stall_us} {window_us}".encode() + b"\0")
    except OSError as e:
        return _errname(e)
    finally:
        os.close(fd)
    return None


def _own_v2_cgroup(unified: Path, proc_cgroup: Path) -> Path | None:
    text = _read_text(proc_cgroup) or ""
    for line in text.splitlines():
        if line.startswith("0::"):
            return unified / line[3:].lstrip("/")
    return None


def psi_min_window(pressure_file: Path) -> tuple[int | None, dict[str, str | None]]:
    """Smallest trigger window (1 or 2 s) the kernel accepts from us, with each attempt's error.

    Without CAP_SYS_RESOURCE the kernel refuses windows that are not 2 s multiples (EINVAL on
    current kernels, EPERM on some), so a refused 1 s window is retried with 2 s.
    """
    tries: dict[str, str | None] = {}
    tries["1s"] = psi_trigger_allowed(pressure_file, 1_000_000)
    if tries["1s"] is None:
        return 1, tries
    tries["2s"] = psi_trigger_allowed(pressure_file, 2_000_000)
    return (2 if tries["2s"] is None else None), tries


def check_psi(layout: Layout | None = None, proc_pressure: Path = Path("/proc/pressure"),
              proc_cgroup: Path = Path("/proc/self/cgroup")) -> Check:
    """System PSI, per-cgroup memory.pressure in the v2 tree, and the smallest trigger window."""
    layout = _safe_layout(layout)
    system = proc_pressure / "memory"
    data: dict[str, Any] = {"system": str(system), "cgroup_file": None,
                            "psi_min_window_s": None, "trigger_errors": {}}
    try:
        system.read_text()
    except OSError as e:
        why = "PSI disabled" if e.errno == errno.EOPNOTSUPP else f"unreadable ({_errname(e)})"
        return Check("psi", MISSING, f"{system}: {why}",
                     "boot with psi=1 (kernel built with CONFIG_PSI)",
                     False, data)
    notes: list[str] = [f"{system} readable"]
    cg_file: Path | None = None
    if layout.unified is not None:
        candidates = [layout.unified / "memory.pressure"]
        own = _own_v2_cgroup(layout.unified, proc_cgroup)
        if own is not None:
            candidates.insert(0, own / "memory.pressure")
        cg_file = next((c for c in candidates if _read_text(c) is not None), None)
    data["cgroup_file"] = str(cg_file) if cg_file else None
    notes.append("per-cgroup memory.pressure in the v2 tree" if cg_file
                 else "no per-cgroup memory.pressure")
    window, tries = psi_min_window(system)
    data["psi_min_window_s"] = window
    data["trigger_errors"] = {k: v for k, v in tries.items() if v}
    status, fix = OK, ""
    if window == 1:
        notes.append("triggers: 1 s windows")
    elif window == 2:
        notes.append(f"triggers: only 2 s multiples (no CAP_SYS_RESOURCE; 1 s: {tries['1s']})")
        status = WARN
        fix = ("optional: run agentshimd with CAP_SYS_RESOURCE to allow 1 s windows; "
               "until then PSI triggers must use 2 s multiples")
    else:
        notes.append(f"triggers refused ({', '.join(f'{k}: {v}' for k, v in tries.items())})")
        status = WARN
        fix = "run as root (kernels before 6.5 refuse unprivileged PSI triggers)"
    if cg_file is None:
        status = WARN
        fix = fix or "mount cgroup2 (hybrid: /sys/fs/cgroup/unified) for per-cgroup PSI"
    return Check("psi", status, "; ".join(notes), fix, False, data)


# --- 3. BPF toolchain ------------------------------------------------------------------------

_BCC_PROBE = "import bcc; print(getattr(bcc, '__version__', 'unknown'))"


def _try_import_bcc(python: str, timeout: float) -> tuple[str | None, str]:
    """(version, '') when `python` imports bcc, else (None, reason)."""
    try:
        proc = subprocess.run([python, "-P", "-c", _BCC_PROBE], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"import timed out after {timeout:g} s"
    except OSError as e:
        return None, f"cannot run {python}: {_errname(e)}"
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"exit status {proc.returncode}"
    return proc.stdout.strip() or "unknown", ""


def check_bcc(python: str | None = None, system_python: str = "/usr/bin/python3",
              timeout: float = SUBPROCESS_TIMEOUT_S) -> Check:
    """Is BCC importable by this interpreter? Imported in a child so a broken bcc cannot hang us."""
    python = python or sys.executable
    version, why = _try_import_bcc(python, timeout)
    data: dict[str, Any] = {"python": python, "version": version}
    if version is not None:
        return Check("bcc", OK, f"bcc {version} importable ({python})", data=data)
    fix = "apt-get install python3-bpfcc (the PyPI package 'bcc' is unrelated)"
    if os.path.realpath(python) != os.path.realpath(system_python) and os.path.exists(
            system_python):
        sys_version, _ = _try_import_bcc(system_python, timeout)
        data["system_python_version"] = sys_version
        if sys_version is not None:
            fix = (f"{system_python} has bcc {sys_version}: create the venv from it with "
                   f"`{system_python} -m venv --system-site-packages .venv`")
    return Check("bcc", MISSING, f"bcc not importable by {python}: {why}", fix, False, data)


_UTS_RE = re.compile(r'#define\s+UTS_RELEASE\s+"([^"]*)"')


def headers_release(build: Path) -> list[str]:
    """Kernel releases a headers tree claims (utsrelease.h first, then kernel.release)."""
    found: list[str] = []
    uts = _read_text(build / "include/generated/utsrelease.h")
    if uts and (m := _UTS_RE.search(uts)):
        found.append(m.group(1))
    rel = _read_text(build / "include/config/kernel.release")
    if rel and rel.strip() and rel.strip() not in found:
        found.append(rel.strip())
    return found


def check_kernel_headers(release: str | None = None,
                         modules_dir: Path = Path("/lib/modules")) -> Check:
    """Headers at /lib/modules/$(uname -r)/build: present, and for the running kernel?"""
    release = release or _kernel_release()
    build = modules_dir / release / "build"
    data: dict[str, Any] = {"kernel": release, "build": str(build), "resolved": None,
                            "headers_release": [], "matching": False}
    fix = (f"run {SETUP_SCRIPT} (links Debian's linux-headers when none match) or install "
           f"linux-headers-{release}")
    if not build.exists():
        what = "a dangling link" if build.is_symlink() else "missing"
        return Check("kernel-headers", MISSING, f"{build} is {what}: BCC cannot compile",
                     fix, False, data)
    resolved = build.resolve()
    data["resolved"] = str(resolved)
    releases = headers_release(build)
    data["headers_release"] = releases
    where = f"{build}" + (f" -> {resolved}" if resolved != build else "")
    if release in releases:
        data["matching"] = True
        return Check("kernel-headers", OK, f"{where} matches {release}", data=data)
    claimed = releases[0] if releases else "an unknown release"
    return Check("kernel-headers", WARN,
                 f"{where} is for {claimed}, kernel is {release}: BPF C must use "
                 "helpers/tracepoint args only (no struct field access)",
                 f"install headers for {release} if they exist; otherwise nothing to do",
                 False, data)


def find_tracefs(dirs: Iterable[Path] = TRACEFS_DIRS) -> Path | None:
    """The first mounted tracefs (a directory holding events/)."""
    for d in dirs:
        try:
            if (d / "events").is_dir():
                return d
        except OSError:
            continue
    return None


def check_swap(proc_swaps: Path | None = None) -> Check:
    """Swap (zram, zswap, a file or partition): where a frozen call's memory is offloaded."""
    from agentshim import swap

    where = proc_swaps or swap.PROC_SWAPS
    devs = swap.devices(where)
    data = {"devices": [d.__dict__ for d in devs], "free_bytes": swap.free_bytes(where),
            "zswap": swap.zswap_enabled()}
    if not devs:
        return Check("swap", WARN, "no swap: a frozen tool call keeps its memory resident "
                     "(freezing postpones a kill; admission and the ladder still work)",
                     swap.HOW_TO_ZRAM, False, data)
    return Check("swap", OK, swap.describe(where), data=data)


def check_tracefs(dirs: Sequence[Path] = TRACEFS_DIRS) -> Check:
    """tracefs mounted? BCC needs it to attach tracepoints."""
    found = find_tracefs(dirs)
    if found is None:
        return Check("tracefs", MISSING,
                     "not mounted at " + " or ".join(str(d) for d in dirs)
                     + ": tracepoints cannot be attached",
                     f"mount -t tracefs tracefs /sys/kernel/tracing (or run {SETUP_SCRIPT})",
                     False, {"path": None})
    return Check("tracefs", OK, f"mounted at {found}", data={"path": str(found)})


def kernel_config(release: str | None = None, proc_config: Path = Path("/proc/config.gz"),
                  boot_dir: Path = Path("/boot")) -> tuple[dict[str, str], str | None]:
    """({CONFIG_X: value}, source) of the running kernel's config, or ({}, None)."""
    release = release or _kernel_release()
    text: str | None = None
    source: str | None = None
    try:
        text = gzip.decompress(proc_config.read_bytes()).decode(errors="replace")
        source = str(proc_config)
    except (OSError, EOFError, gzip.BadGzipFile):
        boot = boot_dir / f"config-{release}"
        text = _read_text(boot)
        source = str(boot) if text is not None else None
    if text is None:
        return {}, None
    config: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            config[key] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            config[line[2:-len(" is not set")]] = "n"
    return config, source


def cgroup_mount_options(mounts: Path = Path("/proc/self/mounts")) -> dict[str, list[str]]:
    """{mount point: its options} of every cgroup and cgroup2 mount."""
    out: dict[str, list[str]] = {}
    for line in (_read_text(mounts) or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            out[parts[1]] = parts[3].split(",")
    return out


def check_favordynmods(mounts: Path = Path("/proc/self/mounts"),
                       cmdline: Path = Path("/proc/cmdline"), release: str | None = None,
                       proc_config: Path = Path("/proc/config.gz"),
                       boot_dir: Path = Path("/boot")) -> Check:
    """cgroup favordynmods: moving a process between cgroups (every tool call's start) then
    skips the wait for an RCU grace period on cgroup_threadgroup_rwsem, the p99 tail of the
    call path. On when any cgroup mount has the option (it is global), when the kernel was
    booted with cgroup_favordynmods=true, or built with CONFIG_CGROUP_FAVOR_DYNMODS=y."""
    opts = cgroup_mount_options(mounts)
    with_opt = sorted(m for m, o in opts.items() if "favordynmods" in o)
    boot = (_read_text(cmdline) or "").split()
    config, _ = kernel_config(release, proc_config, boot_dir)
    data = {"mounts": with_opt, "cmdline": "cgroup_favordynmods=true" in boot,
            "config": config.get("CONFIG_CGROUP_FAVOR_DYNMODS")}
    if with_opt:
        return Check("favordynmods", OK, f"on ({', '.join(with_opt)} mounted with "
                     "favordynmods): cgroup moves skip the rwsem grace period", data=data)
    if data["cmdline"] or data["config"] == "y":
        why = "cgroup_favordynmods=true" if data["cmdline"] else "CONFIG_CGROUP_FAVOR_DYNMODS=y"
        return Check("favordynmods", OK, f"on ({why})", data=data)
    if kernel_version(release or _kernel_release()) < (6, 0):
        return Check("favordynmods", WARN, "not available before Linux 6.0: moving a tool call "
                     "into its cgroup can wait on cgroup_threadgroup_rwsem (the call path's "
                     "p99 tail)", "a 6.0+ kernel", data=data)
    v2 = sorted(m for m, o in opts.items() if m.endswith("unified") or m == "/sys/fs/cgroup")
    target = v2[0] if v2 else "/sys/fs/cgroup"
    return Check("favordynmods", WARN, "off: moving each tool call into its cgroup can wait "
                 "for an RCU grace period on cgroup_threadgroup_rwsem (the call path's p99 "
                 "tail)", f"mount -o remount,favordynmods {target} (until reboot), or boot "
                 "with cgroup_favordynmods=true", data=data)


_CONFIG_KEYS = ("CONFIG_BPF_SYSCALL", "CONFIG_BPF_EVENTS", "CONFIG_KPROBES",
                "CONFIG_DEBUG_INFO_BTF", "CONFIG_PSI")


def check_bpf_syscall(release: str | None = None, proc_config: Path = Path("/proc/config.gz"),
                      boot_dir: Path = Path("/boot")) -> Check:
    """CONFIG_BPF_SYSCALL (and friends) from /proc/config.gz or /boot/config-$(uname -r)."""
    config, source = kernel_config(release, proc_config, boot_dir)
    data: dict[str, Any] = {"source": source, "config": {k: config.get(k) for k in _CONFIG_KEYS}}
    if source is None:
        return Check("bpf-syscall", WARN,
                     "kernel config not available (no /proc/config.gz or /boot/config-*)",
                     "nothing to do unless BPF loading fails (needs CONFIG_BPF_SYSCALL=y)",
                     False, data)
    value = config.get("CONFIG_BPF_SYSCALL", "n")
    if value != "y":
        return Check("bpf-syscall", MISSING, f"CONFIG_BPF_SYSCALL={value} ({source})",
                     "use a kernel built with CONFIG_BPF_SYSCALL=y (without it agentshim has "
                     "no BPF events, only memory.high and PSI)", False, data)
    extras = [k.removeprefix("CONFIG_") for k in _CONFIG_KEYS[1:] if config.get(k) != "y"]
    detail = f"CONFIG_BPF_SYSCALL=y ({source})"
    if extras:
        detail += "; without " + ", ".join(extras)
    return Check("bpf-syscall", OK, detail, data=data)


# --- 4. memory hook points -------------------------------------------------------------------


def _tracefs_events(tracefs: Path) -> set[str] | None:
    """All 'system:event' names of a tracefs, or None when unreadable."""
    text = _read_text(tracefs / "available_events")
    if text is not None:
        return {line.strip() for line in text.splitlines() if ":" in line}
    try:
        return {f"{s.name}:{e.name}" for s in (tracefs / "events").iterdir() if s.is_dir()
                for e in s.iterdir() if e.is_dir()}
    except OSError:
        return None


def _traceiters_from_kallsyms(kallsyms: Path) -> set[str] | None:
    """Tracepoint names (without system) that kallsyms shows as __traceiter_<name>."""
    text = _read_text(kallsyms)
    if text is None:
        return None
    names = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2].startswith("__traceiter_"):
            names.add(parts[2][len("__traceiter_"):])
    return names


def _events_from_kallsyms(kallsyms: Path) -> set[str] | None:
    """Approximate 'system:event' names from kallsyms when tracefs is not mounted.

    kallsyms has no system names: the known events keep theirs, and any other event whose
    name mentions memcg outside vmscan is taken to be in the memcg system.
    """
    names = _traceiters_from_kallsyms(kallsyms)
    if names is None:
        return None
    known = {tp.split(":", 1)[1]: tp for tp in TRACEPOINTS}
    events = {known[n] for n in names if n in known}
    events |= {f"memcg:{n}" for n in names
               if "memcg" in n and not n.startswith("mm_vmscan_") and n not in known}
    return events


def hook_points(tracefs_dirs: Sequence[Path] = TRACEFS_DIRS, kallsyms: Path = KALLSYMS,
                event_sources: Path = EVENT_SOURCES) -> dict[str, Any]:
    """Which memory hook points this kernel has, and the BPF attach strategy they imply.

    Returns a JSON-able dict:
      tracefs            mounted tracefs path or None (BCC needs it to attach tracepoints)
      tracepoint_source  "tracefs" | "kallsyms" (approximate, tracefs not mounted) | "none"
      memcg_tracepoints  sorted memcg:* events
      tracepoints        {"oom:mark_victim": bool, "vmscan:...": bool, "sched:...": bool}
      kprobes_supported  the kernel can create kprobes (CONFIG_KPROBES)
      kprobe_source      "available_filter_functions" | "kallsyms" | "none"
      kprobes            {target: symbol to attach to, or None}; symbols are listed even
                         when kprobes_supported is False
      choice             "memcg tracepoints" | "kprobes + vmscan tracepoints" | "none"
    """
    tracefs = find_tracefs(tracefs_dirs)
    events: set[str] | None = None
    tp_source = "none"
    if tracefs is not None:
        events = _tracefs_events(tracefs)
        tp_source = "tracefs" if events is not None else "none"
    if events is None:
        events = _events_from_kallsyms(kallsyms)
        tp_source = "kallsyms" if events is not None else "none"
    events = events or set()

    # the same discovery the BPF loader plans with (agentshim.bpf.hooks)
    found, kp_source = traceable_symbols(
        {n for names in KPROBE_CANDIDATES.values() for n in names}, tracefs, kallsyms)
    kprobes = {names[0]: next((n for n in names if n in found), None)
               for names in KPROBE_CANDIDATES.values()}
    can_kprobe = kprobes_supported(tracefs, event_sources / "kprobe")
    memcg = sorted(e for e in events if e.startswith("memcg:"))
    if memcg:
        choice = CHOICE_MEMCG
    elif can_kprobe and any(kprobes.values()):
        choice = CHOICE_KPROBES
    else:
        choice = CHOICE_NONE
    return {
        "tracefs": str(tracefs) if tracefs else None,
        "tracepoint_source": tp_source,
        "memcg_tracepoints": memcg,
        "tracepoints": {tp: tp in events for tp in TRACEPOINTS},
        "kprobes_supported": can_kprobe,
        "kprobe_source": kp_source,
        "kprobes": kprobes,
        "choice": choice,
    }


def check_hook_points(hooks: dict[str, Any] | None = None) -> Check:
    """Summarise hook_points(): which memory events BPF can see on this kernel."""
    hooks = hooks if hooks is not None else hook_points()
    tps = hooks["tracepoints"]
    parts: list[str] = []
    if hooks["memcg_tracepoints"]:
        parts.append(", ".join(hooks["memcg_tracepoints"]))
    else:
        parts.append("no memcg:* tracepoints")
    parts += [tp for tp in TRACEPOINTS if tps.get(tp)]
    kps = [sym for sym in hooks["kprobes"].values() if sym]
    if hooks.get("kprobes_supported", True):
        parts.append("kprobes: " + (", ".join(kps) if kps else "none"))
    else:
        parts.append("kprobes unsupported by this kernel (CONFIG_KPROBES off)")
    absent = [tp for tp in TRACEPOINTS if not tps.get(tp)]
    if hooks.get("kprobes_supported", True):
        absent += [k for k, v in hooks["kprobes"].items() if not v]
    detail = f"{hooks['choice']} ({'; '.join(parts)})"
    if absent:
        detail += "; absent: " + ", ".join(absent)
    if hooks["choice"] == CHOICE_NONE:
        return Check("hook-points", MISSING, detail,
                     "no memory hook points found (needs memcg tracepoints or kprobes on "
                     "try_charge_memcg & co.); agentshim runs on memory.high + PSI only",
                     False, hooks)
    if hooks["tracepoint_source"] != "tracefs":
        detail += " [from kallsyms: tracefs not mounted]"
        return Check("hook-points", WARN, detail,
                     "mount -t tracefs tracefs /sys/kernel/tracing to attach tracepoints",
                     False, hooks)
    return Check("hook-points", OK, detail, data=hooks)


# --- 5. memcg_bpf_ops in BTF -----------------------------------------------------------------

BTF_MAGIC = 0xEB9F
BTF_KIND_STRUCT = 4
#: Bytes after the 12-byte btf_type: fixed per kind, and per vlen entry.
_BTF_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_BTF_PER_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
_BTF_NO_EXTRA = {2, 7, 8, 9, 10, 11, 12, 16, 18}


class BtfError(ValueError):
    """The blob is not BTF this parser understands."""


def _btf_sections(data: bytes) -> tuple[str, bytes, bytes]:
    """(struct byte order, type section, string section) of a BTF blob."""
    if len(data) < 24:
        raise BtfError("shorter than a BTF header")
    if struct.unpack_from("<H", data)[0] == BTF_MAGIC:
        order = "<"
    elif struct.unpack_from(">H", data)[0] == BTF_MAGIC:
        order = ">"
    else:
        raise BtfError("bad magic")
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(order + "5I", data, 4)
    base = hdr_len
    if base + type_off + type_len > len(data) or base + str_off + str_len > len(data):
        raise BtfError("sections run past the end of the blob")
    types = data[base + type_off: base + type_off + type_len]
    strings = data[base + str_off: base + str_off + str_len]
    return order, types, strings


def _string_offsets(strings: bytes, name: str) -> set[int]:
    """Offsets in the string section where exactly `name` starts."""
    needle = name.encode() + b"\0"
    found: set[int] = set()
    i = strings.find(needle)
    while i != -1:
        if i == 0 or strings[i - 1] == 0:
            found.add(i)
        i = strings.find(needle, i + 1)
    return found


def btf_find_struct(data: bytes, name: str) -> bool:
    """True when the BTF blob has a STRUCT named `name`; raises BtfError on malformed BTF."""
    order, types, strings = _btf_sections(data)
    wanted = _string_offsets(strings, name)
    if not wanted:
        return False  # the name is nowhere, no need to walk the types
    head = struct.Struct(order + "III")
    pos, end = 0, len(types)
    while pos + head.size <= end:
        name_off, info, _size = head.unpack_from(types, pos)
        pos += head.size
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == BTF_KIND_STRUCT and name_off in wanted:
            return True
        if kind in _BTF_PER_VLEN:
            pos += vlen * _BTF_PER_VLEN[kind]
        elif kind in _BTF_FIXED:
            pos += _BTF_FIXED[kind]
        elif kind not in _BTF_NO_EXTRA:
            raise BtfError(f"unknown BTF kind {kind} at type offset {pos - head.size}")
    return False


def btf_has_struct(name: str, path: Path = VMLINUX_BTF) -> bool:
    """True when the BTF at path (default: the running kernel's) has a STRUCT called name."""
    try:
        return btf_find_struct(path.read_bytes(), name)
    except (OSError, BtfError):
        return False


def check_memcg_bpf_ops(btf_path: Path = VMLINUX_BTF) -> Check:
    """Does the kernel offer struct memcg_bpf_ops (patched kernels: in-kernel throttle)?"""
    absent_fix = "nothing to do: agentshim uses memory.high + BPF events on stock kernels"
    try:
        blob = btf_path.read_bytes()
    except OSError as e:
        return Check("memcg-bpf-ops", WARN,
                     f"no kernel BTF at {btf_path} ({_errname(e)}): cannot tell; "
                     "agentshim uses memory.high + BPF events",
                     absent_fix, False, {"btf": str(btf_path), "present": None})
    try:
        present = btf_find_struct(blob, "memcg_bpf_ops")
    except BtfError as e:
        return Check("memcg-bpf-ops", WARN, f"cannot parse {btf_path}: {e}", absent_fix,
                     False, {"btf": str(btf_path), "present": None})
    data = {"btf": str(btf_path), "present": present}
    if present:
        return Check("memcg-bpf-ops", OK,
                     "struct memcg_bpf_ops in BTF: in-kernel priority throttle available",
                     data=data)
    return Check("memcg-bpf-ops", WARN,
                 "in-kernel priority throttle not available (needs a patched kernel); "
                 "agentshim uses memory.high + BPF events", absent_fix, False, data)


# --- 6. podman -------------------------------------------------------------------------------


def containers_conf_files(env: dict[str, str] | None = None,
                          usr: Path = Path("/usr/share/containers/containers.conf"),
                          etc: Path = Path("/etc/containers/containers.conf")) -> list[Path]:
    """containers.conf files podman (as root) reads, lowest precedence first."""
    env = os.environ if env is None else env
    if env.get("CONTAINERS_CONF"):
        return [Path(env["CONTAINERS_CONF"])]
    files = [usr, etc]
    with contextlib.suppress(OSError):
        files += sorted(Path(str(etc) + ".d").glob("*.conf"))
    return files


def containers_conf(files: Iterable[Path]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merged [containers]/[engine] settings and, per setting, the file that set it."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for f in files:
        try:
            doc = tomllib.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for table in ("containers", "engine"):
            section = doc.get(table)
            if not isinstance(section, dict):
                continue
            for key, value in section.items():
                merged[f"{table}.{key}"] = value
                origin[f"{table}.{key}"] = str(f)
    return merged, origin


def check_podman(podman: str = "podman", timeout: float = SUBPROCESS_TIMEOUT_S) -> Check:
    """podman installed? Its version from `podman version --format json`."""
    exe = shutil.which(podman)
    if exe is None:
        return Check("podman", MISSING, f"{podman} not found in PATH", "apt-get install podman",
                     False, {"version": None})
    try:
        proc = subprocess.run([exe, "version", "--format", "json"], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Check("podman", WARN, f"`podman version` timed out after {timeout:g} s",
                     "check podman by hand: podman version", False, {"version": None})
    except OSError as e:
        return Check("podman", MISSING, f"cannot run {exe}: {_errname(e)}",
                     "apt-get install --reinstall podman", False, {"version": None})
    try:
        info = json.loads(proc.stdout)
        version = (info.get("Client") or info.get("Server") or {}).get("Version")
    except (ValueError, AttributeError):
        version = None
    if proc.returncode != 0 or not version:
        err = (proc.stderr.strip().splitlines() or ["no version in output"])[-1]
        return Check("podman", WARN, f"`podman version` failed: {err}",
                     "check podman by hand: podman version", False, {"version": None})
    return Check("podman", OK, f"podman {version} ({exe})", data={"version": version,
                                                                 "path": exe})


_BUILTIN_RUNTIME = "crun"  # podman 4.x default when containers.conf sets none


def check_podman_runtime(layout: Layout | None = None,
                         conf_files: Sequence[Path] | None = None) -> Check:
    """podman's default OCI runtime, and whether it works in this cgroup mode."""
    layout = _safe_layout(layout)
    files = list(conf_files) if conf_files is not None else containers_conf_files()
    conf, origin = containers_conf(files)
    runtime = str(conf.get("engine.runtime") or _BUILTIN_RUNTIME)
    source = origin.get("engine.runtime", "podman's built-in default")
    name = Path(runtime).name
    exe = runtime if os.path.isabs(runtime) else shutil.which(runtime)
    data = {"runtime": runtime, "source": source, "path": exe, "cgroup_mode": layout.mode}
    where = f"default OCI runtime {runtime} (from {source})"
    fix_runc = (f'{SETUP_SCRIPT} sets runtime = "runc" in /etc/containers/containers.conf '
                "(or pass podman --runtime runc)")
    if layout.mode == "hybrid" and name == "crun":
        return Check("podman-runtime", WARN,
                     f"{where}: crun refuses hybrid cgroups", fix_runc, False, data)
    if exe is None or not os.path.exists(exe):
        return Check("podman-runtime", WARN, f"{where}: {runtime} not installed",
                     f"apt-get install {name}", False, data)
    return Check("podman-runtime", OK, f"{where} works with {layout.mode} cgroups", data=data)


def has_capability(cap: int, status: Path = Path("/proc/self/status")) -> bool | None:
    """Whether CapEff has bit `cap`; None when /proc/self/status cannot be read."""
    text = _read_text(status)
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> cap & 1)
            except (IndexError, ValueError):
                return None
    return None


def check_podman_ulimits(status: Path = Path("/proc/self/status"),
                         conf_files: Sequence[Path] | None = None) -> Check:
    """podman as root asks for RLIMIT_NOFILE 1048576: fine with CAP_SYS_RESOURCE or a lower
    default_ulimits nofile in containers.conf."""
    cap = has_capability(CAP_SYS_RESOURCE, status)
    files = list(conf_files) if conf_files is not None else containers_conf_files()
    conf, origin = containers_conf(files)
    ulimits = conf.get("containers.default_ulimits") or []
    if not isinstance(ulimits, list):
        ulimits = [ulimits]
    nofile = [str(u) for u in ulimits if str(u).startswith("nofile=")]
    data = {"cap_sys_resource": cap, "default_ulimits": [str(u) for u in ulimits],
            "source": origin.get("containers.default_ulimits")}
    if cap:
        return Check("podman-ulimits", OK, "CAP_SYS_RESOURCE held: podman can raise "
                     "RLIMIT_NOFILE", data=data)
    if nofile:
        return Check("podman-ulimits", OK,
                     f"default_ulimits {nofile[0]} ({data['source']}); no CAP_SYS_RESOURCE "
                     "needed", data=data)
    capword = "unknown whether CAP_SYS_RESOURCE is held" if cap is None else \
        "no CAP_SYS_RESOURCE"
    return Check("podman-ulimits", WARN,
                 f"{capword} and no default_ulimits nofile: containers fail with "
                 "'setrlimit RLIMIT_NOFILE: Operation not permitted'",
                 f"{SETUP_SCRIPT} writes default_ulimits = [\"nofile=1024:1024\", "
                 "\"nproc=4096:4096\"] to /etc/containers/containers.conf (or podman run "
                 "--ulimit nofile=1024:1024)", False, data)


# --- 7. OCI hooks ----------------------------------------------------------------------------


def check_oci_hooks(dirs: Sequence[Path] = HOOK_DIRS) -> Check:
    """agentshim's hooks.d JSON files: present, and pointing at an executable?"""
    hooks: list[dict[str, Any]] = []
    for d in dirs:
        try:
            files = sorted(d.glob("*.json"))
        except OSError:
            continue
        for f in files:
            text = _read_text(f)
            if text is None or "agentshim" not in text.lower():
                continue
            entry: dict[str, Any] = {"file": str(f), "stages": [], "path": None,
                                     "executable": False}
            try:
                doc = json.loads(text)
                entry["stages"] = list(doc.get("stages") or [])
                entry["path"] = (doc.get("hook") or {}).get("path")
            except (ValueError, AttributeError):
                entry["error"] = "not valid JSON"
            if entry["path"]:
                entry["executable"] = os.access(entry["path"], os.X_OK)
            hooks.append(entry)
    data = {"dirs": [str(d) for d in dirs], "hooks": hooks}
    if not hooks:
        return Check("oci-hooks", WARN,
                     "no agentshim hook in " + ", ".join(str(d) for d in dirs),
                     "make install (copies hooks/*.json to /usr/share/containers/oci/hooks.d)",
                     False, data)
    broken = [h["file"] for h in hooks if h.get("error") or not h["executable"]]
    stages = sorted({s for h in hooks for s in h["stages"]})
    detail = f"{len(hooks)} hook file(s), stages: {', '.join(stages) or 'none'}"
    if broken:
        return Check("oci-hooks", WARN,
                     f"{detail}; broken (bad JSON or hook path not executable): "
                     + ", ".join(broken), "make install", False, data)
    return Check("oci-hooks", OK, detail, data=data)


# --- 8. agentshimd ---------------------------------------------------------------------------


def check_agentshimd(sock_path: Path | None = None, timeout: float = 0.5) -> Check:
    """Is agentshimd listening on its control socket (default /run/agentshim/agentshimd.sock,
    moved by AGENTSHIM_RUN_DIR)?"""
    sock_path = sock_path or paths.control_socket()
    data = {"socket": str(sock_path)}
    fix = "systemctl start agentshimd (or run `agentshimd &`)"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(sock_path))
    except (OSError, TimeoutError) as e:
        why = _errname(e) if isinstance(e, OSError) and e.errno else "timed out"
        return Check("agentshimd", WARN, f"not running (connect {sock_path}: {why}); "
                     "tool calls run unmanaged", fix, False, data)
    finally:
        s.close()
    return Check("agentshimd", OK, f"listening on {sock_path}", data=data)


def check_bpf_plan(sock_path: Path | None = None) -> Check:
    """The BPF hook points in use: those agentshimd attached (asked over its control socket),
    else those its loader would choose on this kernel."""
    from agentshim.bpf import plan_description
    from agentshim.protocol import DaemonUnavailable, ProtocolError, request

    try:
        st = request(sock_path or paths.control_socket(), {"op": "status"}, timeout_s=1.0)
        enf = st.get("enforcer") or {}
    except (DaemonUnavailable, ProtocolError, OSError):
        enf = {}
    if enf.get("bpf") == "loaded" and enf.get("bpf_plan"):
        text, origin = enf["bpf_plan"], "attached by agentshimd"
    else:
        text = plan_description()
        origin = "chosen on this kernel (agentshimd " + (
            f"BPF {enf['bpf']}" if enf.get("bpf") else "not running") + ")"
    lines = [x.strip() for x in text.splitlines()[1:] if x.strip()]
    used = [x.split()[0] for x in lines if "--" not in x and not x.startswith(("note", "output",
                                                                              "attach"))]
    data = {"origin": origin, "plan": text}
    detail = (f"hook points {origin}: events {', '.join(used) or 'none'} ("
              + "; ".join(" ".join(x.split()) for x in lines) + ")")
    if not used:
        return Check("bpf-plan", WARN, detail, "see docs/bpf.md", False, data)
    return Check("bpf-plan", OK, detail, data=data)


# --- all together ----------------------------------------------------------------------------


@dataclass
class Report:
    """The result of a doctor run."""

    layout: Layout
    hooks: dict[str, Any]
    checks: list[Check]

    @property
    def ok(self) -> bool:
        """False when a required check is missing."""
        return not any(c.required and c.status == MISSING for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of `agentshim doctor --json`."""
        return {
            "cgroup_mode": self.layout.mode,
            "controllers": self.layout.controller_locations(),
            "checks": [c.to_dict() for c in self.checks],
            "hook_points": self.hooks,
            "ok": self.ok,
        }


def _guarded(name: str, fn: Callable[[], Check]) -> Check:
    """Run a check; an unexpected exception becomes a warn rather than a crash."""
    try:
        return fn()
    except Exception as e:  # doctor must always report
        return Check(name, WARN, f"check failed: {type(e).__name__}: {e}",
                     "report this as an agentshim bug")


def run_doctor(layout: Layout | None = None) -> Report:
    """Run every check (slow ones concurrently) and return them in a fixed order."""
    layout = _safe_layout(layout)
    hooks: dict[str, Any]
    try:
        hooks = hook_points()
    except Exception:  # hook discovery must not stop doctor
        hooks = {"tracefs": None, "tracepoint_source": "none", "memcg_tracepoints": [],
                 "tracepoints": dict.fromkeys(TRACEPOINTS, False), "kprobes_supported": False,
                 "kprobe_source": "none",
                 "kprobes": dict.fromkeys(KPROBE_TARGETS), "choice": CHOICE_NONE}
    plan: list[tuple[str, Callable[[], Check]]] = [
        ("cgroups", lambda: check_cgroups(layout)),
        ("cgroupfs", lambda: check_cgroupfs_writable(layout)),
        ("psi", lambda: check_psi(layout)),
        ("swap", check_swap),
        ("favordynmods", check_favordynmods),
        ("bcc", check_bcc),
        ("kernel-headers", check_kernel_headers),
        ("tracefs", check_tracefs),
        ("bpf-syscall", check_bpf_syscall),
        ("hook-points", lambda: check_hook_points(hooks)),
        ("bpf-plan", check_bpf_plan),
        ("memcg-bpf-ops", check_memcg_bpf_ops),
        ("podman", check_podman),
        ("podman-runtime", lambda: check_podman_runtime(layout)),
        ("podman-ulimits", check_podman_ulimits),
        ("oci-hooks", check_oci_hooks),
        ("agentshimd", check_agentshimd),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(_guarded, name, fn) for name, fn in plan]
        checks = [f.result() for f in futures]
    return Report(layout=layout, hooks=hooks, checks=checks)
