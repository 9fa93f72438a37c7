"""One cgroup, seen through every hierarchy agentshim manages on this host.

On cgroup v2 a cgroup is one directory of the unified tree. On a hybrid host the same logical
cgroup is a directory in each v1 hierarchy agentshim uses (memory, freezer, cpuacct) plus one
in the controller-less v2 tree (cgroup.kill, cgroup.events, PSI files, the BPF cgroup id).
The methods below hide which file of which hierarchy does the work; docs/cgroups.md lists
the mapping.

Memory limits on v1 (no memory.high there):
  max  -> memory.limit_in_bytes with the OOM killer on (oom_kill_disable=0)
  high -> memory.limit_in_bytes with oom_kill_disable=1: at the limit the kernel reclaims and
          then makes the tasks wait instead of killing them; agentshimd sees under_oom=1 and
          applies its ladder (raise the limit, freeze, or kill the call). When both are set the
          smaller one is written; the OOM killer stays on only if max is the binding one.
  low  -> memory.soft_limit_in_bytes (under host pressure, groups over it are reclaimed first)
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agentshim.cgroups.errors import CgroupError
from agentshim.cgroups.layout import V1_USED, Layout
from agentshim.cgroups.psi import Pressure, PsiTrigger, arm_trigger, read_pressure

#: Value meaning "no limit" for set_memory().
UNLIMITED: int | None = None

V1_UNLIMITED = "-1"


@dataclass(frozen=True)
class MemoryLimits:
    """Budgets of one cgroup in bytes; None means no limit (max) / no protection (low).

    `swap` bounds what the cgroup may have in swap beyond its memory limit: 0 keeps it in RAM
    (v2 memory.swap.max 0; v1 memory.swappiness 0, so its own limit never swaps it), so that a
    budget stays a budget on a host with swap; None leaves swap alone. v2 takes any size."""

    high: int | None = None
    max: int | None = None
    low: int | None = None
    swap: int | None = None


@dataclass(frozen=True)
class MemoryEvents:
    """Memory limit events, the same names on both cgroup versions.

    v2: from memory.events. v1: `max` and `high` come from memory.failcnt (a hit of
    limit_in_bytes counts as `high` when that limit is the throttling kind), oom_kill and
    under_oom from memory.oom_control.
    """

    low: int = 0
    high: int = 0
    max: int = 0
    oom: int = 0
    oom_kill: int = 0
    under_oom: bool = False
    raw: Mapping[str, int] = field(default_factory=dict)


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse 'key value' lines (memory.events, memory.stat, cpu.stat, oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = int(parts[1])
    return out


def _mkdir(path: Path) -> None:
    """mkdir, a seam for fixture tests (cgroupfs fills a new directory with interface files)."""
    os.mkdir(path)


def _rmdir(path: Path) -> None:
    """rmdir, a seam for fixture tests (a fixture dir holds regular files, cgroupfs doesn't)."""
    os.rmdir(path)


class Cgroup:
    """A logical cgroup: its directory in each managed hierarchy."""

    def __init__(self, layout: Layout, dirs: Mapping[str, Path]) -> None:
        if not dirs:
            raise ValueError("a cgroup needs at least one hierarchy directory")
        self.layout = layout
        self.dirs: dict[str, Path] = dict(dirs)

    # --- construction -------------------------------------------------------------------
    @staticmethod
    def hierarchies(layout: Layout) -> list[str]:
        """Hierarchy keys the layer manages in this layout ('unified' and/or v1 names)."""
        keys = [c for c in V1_USED if c in layout.v1] if layout.mode != "v2" else []
        if layout.unified is not None:
            keys.append("unified")
        return keys

    @classmethod
    def at(cls, layout: Layout, rel: str | PurePosixPath) -> Cgroup:
        """The cgroup at the same relative path in every managed hierarchy."""
        r = PurePosixPath("/") / PurePosixPath(rel)
        parts = r.relative_to("/")
        dirs = {}
        for key in cls.hierarchies(layout):
            root = layout.unified if key == "unified" else layout.v1[key]
            assert root is not None
            dirs[key] = root / parts
        return cls(layout, dirs)

    @classmethod
    def of_pid(cls, layout: Layout, pid: int, proc: Path = Path("/proc")) -> Cgroup:
        """The cgroup a process is in, per hierarchy (from /proc/PID/cgroup)."""
        try:
            text = (proc / str(pid) / "cgroup").read_text()
        except OSError as e:
            raise CgroupError("read", proc / str(pid) / "cgroup", e) from e
        rels: dict[str, str] = {}
        for line in text.splitlines():
            _hid, ctrls, rel = line.split(":", 2)
            if ctrls == "":
                rels["unified"] = rel
            for c in ctrls.split(","):
                rels.setdefault(c, rel)
        dirs = {}
        for key in cls.hierarchies(layout):
            if key not in rels:
                continue
            root = layout.unified if key == "unified" else layout.v1[key]
            assert root is not None
            dirs[key] = root / rels[key].lstrip("/")
        return cls(layout, dirs)

    def child(self, name: str) -> Cgroup:
        """The child cgroup `name` (not created)."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"bad cgroup name {name!r}")
        return Cgroup(self.layout, {k: d / name for k, d in self.dirs.items()})

    def parent(self) -> Cgroup:
        """The parent cgroup (same hierarchies)."""
        return Cgroup(self.layout, {k: d.parent for k, d in self.dirs.items()})

    def dir_for(self, role: str) -> Path:
        """The directory doing a job here: memory, freezer, cpu or unified (the v2 tree that
        BPF, PSI and cgroup.kill use); CgroupError when this host has none for it."""
        return self._dir(role)

    @property
    def name(self) -> str:
        """The last path component."""
        return self.primary.name

    @property
    def primary(self) -> Path:
        """The directory that holds the memory files (shown in messages)."""
        return self._dir("memory")

    def __repr__(self) -> str:
        return f"Cgroup({self.primary})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cgroup) and self.dirs == other.dirs

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, str(v)) for k, v in self.dirs.items())))

    # --- where each job is done -----------------------------------------------------------
    def _dir(self, role: str) -> Path:
        """Directory for a role: memory, freezer, cpu, unified."""
        key = self._role_key(role)
        if key is None or key not in self.dirs:
            raise CgroupError(f"{role} (no hierarchy for it on this host) at",
                              next(iter(self.dirs.values())),
                              OSError(errno.ENOTSUP, "not supported"))
        return self.dirs[key]

    def _role_key(self, role: str) -> str | None:
        mode = self.layout.mode
        if role == "unified":
            return "unified" if "unified" in self.dirs else None
        if mode == "v2":
            return "unified"
        if role == "memory":
            return "memory"
        if role == "freezer":
            return "freezer" if "freezer" in self.dirs else self._role_key("unified")
        if role == "cpu":
            return "cpuacct" if "cpuacct" in self.dirs else self._role_key("unified")
        return None

    def has_role(self, role: str) -> bool:
        """True when this host has a hierarchy for the role."""
        key = self._role_key(role)
        return key is not None and key in self.dirs

    # --- file access ----------------------------------------------------------------------
    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text()
        except OSError as e:
            raise CgroupError("read", path, e) from e

    @staticmethod
    def _write(path: Path, value: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise CgroupError(f"write {value!r} to", path, e) from e
        try:
            os.write(fd, value.encode())
        except OSError as e:
            raise CgroupError(f"write {value!r} to", path, e) from e
        finally:
            os.close(fd)

    def read(self, role: str, filename: str) -> str:
        """Read an interface file of the hierarchy serving `role`."""
        return self._read(self._dir(role) / filename)

    def write(self, role: str, filename: str, value: str) -> None:
        """Write an interface file of the hierarchy serving `role`."""
        self._write(self._dir(role) / filename, value)

    def _read_int(self, role: str, filename: str) -> int:
        text = self.read(role, filename).strip()
        if text == "max":
            return -1
        try:
            return int(text)
        except ValueError as e:
            raise CgroupError("parse", self._dir(role) / filename,
                              OSError(errno.EINVAL, f"not an integer: {text!r}")) from e

    # --- lifetime -------------------------------------------------------------------------
    def exists(self) -> bool:
        """True when the cgroup's directory exists in every managed hierarchy."""
        return all(d.is_dir() for d in self.dirs.values())

    def create(self, exist_ok: bool = False) -> None:
        """mkdir in every hierarchy; on failure, the directories made so far are removed."""
        made: list[Path] = []
        for d in self.dirs.values():
            try:
                _mkdir(d)
            except FileExistsError as e:
                if exist_ok:
                    continue
                self._undo(made)
                raise CgroupError("mkdir", d, e) from e
            except OSError as e:
                self._undo(made)
                raise CgroupError("mkdir", d, e) from e
            made.append(d)

    @staticmethod
    def _undo(made: list[Path]) -> None:
        for d in reversed(made):
            with contextlib.suppress(OSError):
                _rmdir(d)

    def remove(self, missing_ok: bool = True) -> None:
        """rmdir in every hierarchy (the cgroup must have no processes and no children).

        All hierarchies are tried even when one fails; the first error is raised after.
        """
        first: CgroupError | None = None
        for d in self.dirs.values():
            try:
                _rmdir(d)
            except FileNotFoundError as e:
                if not missing_ok and first is None:
                    first = CgroupError("rmdir", d, e)
            except OSError as e:
                if first is None:
                    first = CgroupError("rmdir", d, e)
        if first is not None:
            raise first

    def children(self) -> list[Cgroup]:
        """Existing child cgroups (directories of the primary hierarchy)."""
        try:
            with os.scandir(self.primary) as it:  # d_type: no stat per control file
                names = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise CgroupError("list", self.primary, e) from e
        return [self.child(n) for n in names]

    def walk_post_order(self) -> Iterator[Cgroup]:
        """This cgroup's descendants, deepest first, then itself."""
        for c in self.children():
            yield from c.walk_post_order()
        yield self

    def remove_tree(self, kill: bool = False) -> None:
        """Remove this cgroup and all its descendants, deepest first; idempotent.

        With kill=True, processes still inside are killed first (and waited for briefly).
        """
        if not any(d.exists() for d in self.dirs.values()):
            return
        if kill:
            self.kill()
            self.wait_empty(timeout_s=5.0)
        for cg in self.walk_post_order():
            cg.remove(missing_ok=True)

    # --- processes ------------------------------------------------------------------------
    def procs(self, role: str = "memory") -> list[int]:
        """PIDs directly in this cgroup (in the hierarchy serving `role`)."""
        text = self.read(role, "cgroup.procs")
        return [int(x) for x in text.split()]

    def all_procs(self) -> list[int]:
        """PIDs in this cgroup and all its descendants."""
        out: list[int] = []
        for cg in self.walk_post_order():
            with contextlib.suppress(CgroupError):
                out.extend(cg.procs())
        return out

    def move(self, pid: int) -> None:
        """Move a process (all its threads) into this cgroup in every hierarchy.

        On failure, the hierarchies already written are left as they are and the error names
        the one that refused; callers that need all-or-nothing move the pid back.
        """
        for d in self.dirs.values():
            try:
                self._write(d / "cgroup.procs", str(pid))
            except CgroupError as e:
                if e.errno == errno.ESRCH:
                    raise CgroupError(f"move pid {pid} into", d, OSError(errno.ESRCH,
                                      "no such process")) from e
                raise

    def populated(self) -> bool:
        """True when a process is in this cgroup or a descendant."""
        if self.has_role("unified"):
            with contextlib.suppress(CgroupError):
                ev = parse_flat_keyed(self.read("unified", "cgroup.events"))
                if "populated" in ev:
                    return ev["populated"] == 1
        return bool(self.all_procs())

    def wait_empty(self, timeout_s: float = 5.0, interval_s: float = 0.01) -> bool:
        """Wait until no process is left; True if that happened within the timeout."""
        deadline = time.monotonic() + timeout_s
        while self.populated():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval_s)
        return True

    # --- controllers (v2) -----------------------------------------------------------------
    def enable_controllers(self, wanted: tuple[str, ...] = ("memory", "cpu", "pids")) -> list[str]:
        """Enable controllers for the children (v2 subtree_control). Obeys the no-internal-
        process rule: call it only once this cgroup's processes were moved into children.
        Returns the controllers enabled; on hybrid hosts nothing is needed and [] is returned.
        """
        if self.layout.mode != "v2":
            return []
        avail = set(self.read("unified", "cgroup.controllers").split())
        enabled = [c for c in wanted if c in avail]
        if enabled:
            self.write("unified", "cgroup.subtree_control", " ".join("+" + c for c in enabled))
        return enabled

    def disable_controllers(self) -> None:
        """Disable every controller enabled for the children (v2 only; no-op elsewhere)."""
        if self.layout.mode != "v2":
            return
        on = self.read("unified", "cgroup.subtree_control").split()
        if on:
            self.write("unified", "cgroup.subtree_control", " ".join("-" + c for c in on))

    # --- memory ---------------------------------------------------------------------------
    def set_memory(self, limits: MemoryLimits) -> None:
        """Apply memory budgets (see the module docstring for the v1 mapping)."""
        if self.layout.mode == "v2":
            def v(x: int | None, none: str) -> str:
                return none if x is None else str(x)
            self.write("memory", "memory.low", v(limits.low, "0"))
            self.write("memory", "memory.high", v(limits.high, "max"))
            self.write("memory", "memory.max", v(limits.max, "max"))
            if limits.swap is not None and (self._dir("memory") / "memory.swap.max").exists():
                self.write("memory", "memory.swap.max", str(limits.swap))
            return
        bound = [x for x in (limits.high, limits.max) if x is not None]
        limit = min(bound) if bound else None
        throttle = limits.high is not None and (limits.max is None or limits.high < limits.max)
        self._set_v1_limits(limit, limits.swap)
        self.write("memory", "memory.oom_control", "1" if throttle else "0")
        self.write("memory", "memory.soft_limit_in_bytes",
                   V1_UNLIMITED if limits.low is None else str(limits.low))

    def _set_v1_limits(self, limit: int | None, swap: int | None) -> None:
        """limit_in_bytes, and for swap=0 memory.swappiness 0: the cgroup's own limit
        reclaim then never swaps its anonymous memory (v1 keeps memory.failcnt and under_oom
        meaningful that way; a memsw limit equal to the memory limit would be hit first, and
        6.x kernels do not count memsw failures)."""
        self.write("memory", "memory.limit_in_bytes", V1_UNLIMITED if limit is None else str(limit))
        if swap not in (None, 0):
            raise ValueError("cgroup v1: a swap bound other than 0 is not supported")
        if swap == 0 and (self._dir("memory") / "memory.swappiness").exists():
            self.write("memory", "memory.swappiness", "0")

    def allow_swap(self) -> None:
        """Lift the cgroup's swap bound (for offloading a frozen call)."""
        if self.layout.mode == "v2":
            if (self._dir("memory") / "memory.swap.max").exists():
                self.write("memory", "memory.swap.max", "max")
            return
        try:
            host = Path("/proc/sys/vm/swappiness").read_text().strip() or "60"
        except OSError:
            host = "60"
        self.write("memory", "memory.swappiness", host if host != "0" else "60")

    def memory_limits(self) -> MemoryLimits:
        """Read the budgets back in the same terms as set_memory()."""
        def opt(x: int) -> int | None:
            return None if x < 0 or x >= 1 << 62 else x
        if self.layout.mode == "v2":
            low = opt(self._read_int("memory", "memory.low"))
            return MemoryLimits(high=opt(self._read_int("memory", "memory.high")),
                                max=opt(self._read_int("memory", "memory.max")),
                                low=low or None)
        limit = opt(self._read_int("memory", "memory.limit_in_bytes"))
        soft = opt(self._read_int("memory", "memory.soft_limit_in_bytes"))
        oc = parse_flat_keyed(self.read("memory", "memory.oom_control"))
        if oc.get("oom_kill_disable", 0):
            return MemoryLimits(high=limit, max=None, low=soft)
        return MemoryLimits(high=None, max=limit, low=soft)

    def memory_usage(self) -> int:
        """Current memory charged to the cgroup, bytes."""
        if self.layout.mode == "v2":
            return self._read_int("memory", "memory.current")
        return self._read_int("memory", "memory.usage_in_bytes")

    def memory_peak(self) -> int:
        """Highest memory charged since creation, bytes (v2 memory.peak, v1 max_usage)."""
        if self.layout.mode == "v2":
            return self._read_int("memory", "memory.peak")
        return self._read_int("memory", "memory.max_usage_in_bytes")

    def memory_events(self) -> MemoryEvents:
        """Limit events (see MemoryEvents for the v1 mapping)."""
        if self.layout.mode == "v2":
            ev = parse_flat_keyed(self.read("memory", "memory.events"))
            return MemoryEvents(low=ev.get("low", 0), high=ev.get("high", 0),
                                max=ev.get("max", 0), oom=ev.get("oom", 0),
                                oom_kill=ev.get("oom_kill", 0), raw=ev)
        failcnt = self._read_int("memory", "memory.failcnt")
        oc = parse_flat_keyed(self.read("memory", "memory.oom_control"))
        throttling = bool(oc.get("oom_kill_disable", 0))
        raw = dict(oc, failcnt=failcnt)
        return MemoryEvents(high=failcnt if throttling else 0, max=failcnt,
                            oom=oc.get("oom_kill", 0), oom_kill=oc.get("oom_kill", 0),
                            under_oom=bool(oc.get("under_oom", 0)), raw=raw)

    def memory_stat(self) -> dict[str, int]:
        """memory.stat as a dict."""
        return parse_flat_keyed(self.read("memory", "memory.stat"))

    # --- cpu ------------------------------------------------------------------------------
    def cpu_usage_us(self) -> int:
        """CPU time used by the cgroup's processes, microseconds."""
        key = self._role_key("cpu")
        if key == "cpuacct":
            return self._read_int("cpu", "cpuacct.usage") // 1000
        stat = parse_flat_keyed(self.read("cpu", "cpu.stat"))
        return stat.get("usage_usec", 0)

    # --- freezing -------------------------------------------------------------------------
    def _uses_v1_freezer(self) -> bool:
        return self._role_key("freezer") == "freezer"

    def freeze(self, wait_s: float = 2.0) -> bool:
        """Freeze every process in the cgroup (and below). Returns True once the kernel
        reports the whole subtree frozen, False if that took longer than wait_s."""
        if self._uses_v1_freezer():
            self.write("freezer", "freezer.state", "FROZEN")
        else:
            self.write("freezer", "cgroup.freeze", "1")
        return self._wait_frozen(True, wait_s)

    def thaw(self, wait_s: float = 2.0) -> bool:
        """Undo freeze(); True once the kernel reports the cgroup running."""
        if self._uses_v1_freezer():
            self.write("freezer", "freezer.state", "THAWED")
        else:
            self.write("freezer", "cgroup.freeze", "0")
        return self._wait_frozen(False, wait_s)

    def frozen(self) -> bool:
        """True when the kernel reports the cgroup frozen."""
        if self._uses_v1_freezer():
            return self.read("freezer", "freezer.state").strip() == "FROZEN"
        return parse_flat_keyed(self.read("freezer", "cgroup.events")).get("frozen", 0) == 1

    def _wait_frozen(self, want: bool, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while self.frozen() != want:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    # --- offloading -----------------------------------------------------------------------
    def offload(self, target: int = 0, step: int = 64 << 20, deadline_s: float = 10.0) -> int:
        """Push the cgroup's memory out (to swap, for anonymous pages) until its usage is
        down to `target` bytes, no more goes, or deadline_s passes; meant for a frozen call,
        whose pages then come back as it touches them after its thaw. v2 asks memory.reclaim;
        v1 steps memory.limit_in_bytes down (each write reclaims, EBUSY when nothing more
        goes) and restores it. Returns the bytes that went."""
        before = self.memory_usage()
        if before <= target:
            return 0
        # a call's budget keeps it out of swap (MemoryLimits.swap=0): lifted for the offload,
        # put back after (what went to swap stays there until it is touched)
        bound_file = "memory.swap.max" if self.layout.mode == "v2" else "memory.swappiness"
        try:
            bound = self.read("memory", bound_file).strip()
        except CgroupError:
            bound = None
        self.allow_swap()
        try:
            return self._push_out(before, target, step, deadline_s)
        finally:
            if bound is not None:
                with contextlib.suppress(CgroupError):
                    self.write("memory", bound_file, bound)

    def _push_out(self, before: int, target: int, step: int, deadline_s: float) -> int:
        if self.layout.mode == "v2":
            with contextlib.suppress(CgroupError):  # EAGAIN: less went than asked
                self.write("memory", "memory.reclaim", str(before - target))
            return max(0, before - self.memory_usage())
        orig = self.read("memory", "memory.limit_in_bytes").strip()
        end = time.monotonic() + deadline_s
        limit = before
        try:
            while limit > target and time.monotonic() < end:
                limit = max(target, min(limit, self.memory_usage()) - step)
                try:
                    self.write("memory", "memory.limit_in_bytes", str(limit))
                except CgroupError:
                    break  # EBUSY: the kernel could not get usage under it
        finally:
            with contextlib.suppress(CgroupError):
                self.write("memory", "memory.limit_in_bytes", orig)
        return max(0, before - self.memory_usage())

    # --- killing --------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL every process in the cgroup and its descendants.

        cgroup.kill where the kernel has it (5.14+, hybrid hosts' v2 tree too), thawing a v1
        freezer that holds the processes; otherwise the subtree is frozen, each process is
        killed, and it is thawed so the kills land.
        """
        if self.has_role("unified") and (self._dir("unified") / "cgroup.kill").exists():
            self.write("unified", "cgroup.kill", "1")
            if self._uses_v1_freezer() and self.read("freezer", "freezer.state").strip() != \
                    "THAWED":
                self.thaw(wait_s=1.0)  # v1-frozen tasks only act on the SIGKILL once thawed
            return
        froze = False
        with contextlib.suppress(CgroupError):
            froze = self.freeze(wait_s=1.0)
        try:
            for pid in self.all_procs():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            if froze:
                self.thaw(wait_s=1.0)

    # --- pressure and identity ------------------------------------------------------------
    def pressure(self, resource: str = "memory") -> Pressure:
        """PSI of this cgroup for memory, cpu or io (from the v2 tree)."""
        return read_pressure(self._dir("unified") / f"{resource}.pressure")

    def psi_trigger(self, stall_us: int, window_us: int, kind: str = "some",
                    resource: str = "memory",
                    fallback_window_us: int | None = 2_000_000) -> PsiTrigger:
        """Arm a PSI trigger on this cgroup (falls back to a 2 s window where refused)."""
        return arm_trigger(self._dir("unified") / f"{resource}.pressure", stall_us, window_us,
                           kind, fallback_window_us)

    @property
    def id(self) -> int:
        """The cgroup id BPF sees (bpf_get_current_cgroup_id): the v2 directory's inode."""
        d = self._dir("unified")
        try:
            return os.stat(d).st_ino
        except OSError as e:
            raise CgroupError("stat", d, e) from e
