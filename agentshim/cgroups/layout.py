"""Where the cgroup hierarchies of this host are mounted, and which mode that makes.

Modes:
  v2      one unified hierarchy that holds the memory controller
  hybrid  v1 hierarchies hold the controllers (memory, freezer, ...); a cgroup2 tree
          is mounted too (usually at /sys/fs/cgroup/unified) without them
  v1      v1 hierarchies only
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: v1 controllers the layer uses; others are reported by doctor but left alone.
V1_USED = ("memory", "freezer", "cpuacct")


@dataclass(frozen=True)
class Layout:
    """The cgroup mounts of a host (or of a fixture tree in tests)."""

    mode: str
    unified: Path | None = None
    unified_controllers: frozenset[str] = frozenset()
    v1: dict[str, Path] = field(default_factory=dict)

    @property
    def memory_v1(self) -> bool:
        """True when memory limits live in the v1 memory hierarchy."""
        return self.mode != "v2"

    def controller_locations(self) -> dict[str, str]:
        """Map every mounted controller to the directory that holds it."""
        out: dict[str, str] = {c: str(p) for c, p in sorted(self.v1.items())}
        if self.unified is not None:
            for c in sorted(self.unified_controllers):
                out.setdefault(c, str(self.unified))
        return out


def _unescape(field_: str) -> str:
    """Undo the octal escapes of /proc/*/mountinfo (\\040 for space)."""
    if "\\" not in field_:
        return field_
    return field_.encode().decode("unicode_escape")


def parse_mountinfo(text: str) -> tuple[Path | None, dict[str, Path]]:
    """Return (cgroup2 mount point, {v1 controller: mount point}) from mountinfo text."""
    unified: Path | None = None
    v1: dict[str, Path] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mountpoint = Path(_unescape(fields[4]))
        fstype, super_opts = rfields[0], rfields[2]
        if fstype == "cgroup2":
            # Prefer the shortest path if mounted more than once.
            if unified is None or len(str(mountpoint)) < len(str(unified)):
                unified = mountpoint
        elif fstype == "cgroup":
            for opt in super_opts.split(","):
                if opt in ("rw", "ro") or opt.startswith("name=") or "=" in opt:
                    continue
                v1.setdefault(opt, mountpoint)
    return unified, v1


def layout_from(unified: Path | None, v1: dict[str, Path]) -> Layout:
    """Build a Layout from mount points, reading the unified tree's controllers."""
    controllers: frozenset[str] = frozenset()
    if unified is not None:
        try:
            controllers = frozenset((unified / "cgroup.controllers").read_text().split())
        except OSError:
            controllers = frozenset()
    if unified is not None and "memory" in controllers:
        mode = "v2"
    elif v1:
        mode = "hybrid" if unified is not None else "v1"
    elif unified is not None:
        mode = "v2"  # a v2 host whose memory controller is not enabled at the root
    else:
        mode = "none"
    return Layout(mode=mode, unified=unified, unified_controllers=controllers, v1=dict(v1))


def detect_layout(mountinfo: Path = Path("/proc/self/mountinfo")) -> Layout:
    """Detect this host's cgroup layout from its mount table."""
    unified, v1 = parse_mountinfo(mountinfo.read_text())
    return layout_from(unified, v1)
