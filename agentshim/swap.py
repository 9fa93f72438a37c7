"""What swap this host has: zram, zswap, swap files and partitions (read-only).

agentshim uses swap to offload the memory of a frozen tool call (agentshim.cgroups.Cgroup.
offload): frozen memory that stays resident is not freed memory. `agentshim doctor` reports
what is here and how to get zram when nothing is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC_SWAPS = Path("/proc/swaps")
ZSWAP_ENABLED = Path("/sys/module/zswap/parameters/enabled")
#: less free swap than this and offloading is not worth trying
OFFLOAD_MIN_FREE = 64 << 20
#: free swap of at least this share of a scope's limit is "ample": let the kernel page
AMPLE_SHARE = 0.25


def policy() -> str:
    """AGENTSHIM_SWAP_POLICY: "page" (default) lets tool calls swap and, where swap is ample,
    lets the kernel page rather than freezing or killing; "bound" keeps every call's budget
    a bound on memory and swap together and the ladder as it is without swap."""
    return "bound" if os.environ.get("AGENTSHIM_SWAP_POLICY", "page") == "bound" else "page"

HOW_TO_ZRAM = ("enable zram swap: Debian/Ubuntu `apt install zram-tools` (then "
               "/etc/default/zramswap: ALGO=lz4, PERCENT=25; `systemctl restart zramswap`), "
               "Fedora has zram-generator by default; or by hand: "
               "`echo lz4 > /sys/block/zram0/comp_algorithm; echo 4G > /sys/block/zram0/disksize;"
               " mkswap /dev/zram0; swapon -p 100 /dev/zram0` (packaging/setup-host.sh does this)")


@dataclass(frozen=True)
class SwapDevice:
    """One line of /proc/swaps, sizes in bytes."""

    name: str
    kind: str  # zram, partition or file
    size: int
    used: int
    priority: int


def devices(proc_swaps: Path = PROC_SWAPS) -> list[SwapDevice]:
    """The active swap devices (none when /proc/swaps cannot be read)."""
    try:
        lines = proc_swaps.read_text().splitlines()[1:]
    except OSError:
        return []
    out = []
    for line in lines:
        f = line.split()
        if len(f) < 5:
            continue
        try:
            size, used, prio = int(f[2]) * 1024, int(f[3]) * 1024, int(f[4])
        except ValueError:
            continue
        kind = "zram" if Path(f[0]).name.startswith("zram") else f[1]
        out.append(SwapDevice(f[0], kind, size, used, prio))
    return out


def free_bytes(proc_swaps: Path = PROC_SWAPS) -> int:
    """Swap space not in use, over every device."""
    return sum(d.size - d.used for d in devices(proc_swaps))


def zswap_enabled(path: Path = ZSWAP_ENABLED) -> bool:
    """True when the zswap compressed cache sits in front of swap."""
    try:
        return path.read_text().strip() in ("Y", "1")
    except OSError:
        return False


def describe(proc_swaps: Path = PROC_SWAPS, zswap: Path = ZSWAP_ENABLED) -> str:
    """One line: what swap there is, or 'none'."""
    devs = devices(proc_swaps)
    if not devs:
        return "none"
    parts = [f"{d.name} ({d.kind}, {d.size >> 20} MiB, {d.used >> 20} MiB used)" for d in devs]
    return ", ".join(parts) + ("; zswap on" if zswap_enabled(zswap) else "")
