"""Pressure stall information: read a cgroup's (or the host's) PSI and arm a PSI trigger."""

from __future__ import annotations

import errno
import os
import select
from dataclasses import dataclass
from pathlib import Path

from agentshim.cgroups.errors import CgroupError


@dataclass(frozen=True)
class PsiLine:
    """One line of a pressure file: averages in percent, total stall time in microseconds."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True)
class Pressure:
    """The `some` and `full` lines of a pressure file (`full` is absent for cpu on old kernels)."""

    some: PsiLine
    full: PsiLine | None


def parse_pressure(text: str) -> Pressure:
    """Parse the text of a *.pressure file."""
    lines: dict[str, PsiLine] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        try:
            lines[parts[0]] = PsiLine(float(kv["avg10"]), float(kv["avg60"]),
                                      float(kv["avg300"]), int(kv["total"]))
        except (KeyError, ValueError) as e:
            raise ValueError(f"malformed pressure line {line!r}") from e
    if "some" not in lines:
        raise ValueError("pressure text has no 'some' line")
    return Pressure(some=lines["some"], full=lines.get("full"))


def read_pressure(path: Path) -> Pressure:
    """Read and parse a pressure file, raising CgroupError when it cannot be read."""
    try:
        return parse_pressure(path.read_text())
    except OSError as e:
        raise CgroupError("read", path, e) from e


class PsiTrigger:
    """An armed PSI trigger: poll() returns True when the stall threshold was crossed.

    The kernel keeps the trigger while the file stays open; close() (or the context manager)
    disarms it. fileno() lets a daemon put several triggers into one poll/epoll set.
    """

    def __init__(self, path: Path, kind: str, stall_us: int, window_us: int) -> None:
        if kind not in ("some", "full"):
            raise ValueError(f"PSI trigger kind must be 'some' or 'full', not {kind!r}")
        if stall_us <= 0 or window_us <= 0 or stall_us > window_us:
            raise ValueError(
                f"PSI trigger needs 0 < stall ({stall_us}us) <= window ({window_us}us)")
        self.path = path
        self.kind = kind
        self.stall_us = stall_us
        self.window_us = window_us
        spec = f"{kind} {stall_us} {window_us}"
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise CgroupError("open", path, e) from e
        try:
            os.write(self._fd, spec.encode() + b"\0")
        except OSError as e:
            os.close(self._fd)
            detail = ""
            if e.errno in (errno.EPERM, errno.EINVAL) and window_us % 2_000_000:
                detail = (f"trigger refused: without CAP_SYS_RESOURCE the window must be a "
                          f"multiple of 2 s (asked {window_us / 1e6:g} s)")
            raise CgroupError(f"arm PSI trigger '{spec}' on", path, e, detail) from e
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLPRI)

    def fileno(self) -> int:
        """The file descriptor to poll for POLLPRI."""
        return self._fd

    def poll(self, timeout_s: float | None = 0.0) -> bool:
        """Wait up to timeout_s for the trigger to fire; True if it did."""
        ms = None if timeout_s is None else int(timeout_s * 1000)
        for _fd, ev in self._poll.poll(ms):
            if ev & select.POLLERR:
                raise CgroupError("poll PSI trigger", self.path,
                                  OSError(errno.ENODEV, "the cgroup went away"))
            if ev & select.POLLPRI:
                return True
        return False

    def close(self) -> None:
        """Disarm the trigger."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PsiTrigger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def arm_trigger(path: Path, stall_us: int, window_us: int, kind: str = "some",
                fallback_window_us: int | None = 2_000_000) -> PsiTrigger:
    """Arm a trigger; when the kernel refuses the window (EPERM, or EINVAL for a window that is
    not a multiple of 2 s without CAP_SYS_RESOURCE), retry once with fallback_window_us,
    scaling the stall threshold to keep the same ratio."""
    try:
        return PsiTrigger(path, kind, stall_us, window_us)
    except CgroupError as e:
        refused = e.errno == errno.EPERM or (e.errno == errno.EINVAL and window_us % 2_000_000)
        if not refused or not fallback_window_us or fallback_window_us == window_us:
            raise
        stall = max(1, stall_us * fallback_window_us // window_us)
        return PsiTrigger(path, kind, stall, fallback_window_us)
