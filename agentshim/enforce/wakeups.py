"""Kernel notifications that wake the ladder at once, without polling:

* v1 memory thresholds: an eventfd registered through cgroup.event_control fires when
  memory.usage_in_bytes crosses a value (either way);
* v2 memory.events: the kernel notifies pollers (POLLPRI) whenever a counter changes;
* PSI triggers (agentshim.cgroups.psi): POLLPRI when stall time exceeds a threshold.

A Waker polls all of them in one thread and calls ``on_wake(tag)`` for each that fired.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from agentshim.cgroups import CgroupError

log = logging.getLogger("agentshimd.wakeups")
Kind = Literal["eventfd", "kernfs", "psi"]


def v1_event(memory_dir: Path, control_file: str, arg: str = "") -> int:
    """An eventfd registered through the v1 memory cgroup's cgroup.event_control on
    control_file (with arg, e.g. a threshold). The registration lives as long as the eventfd
    (close it to drop it) or the cgroup."""
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        cfd = os.open(memory_dir / control_file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open(memory_dir / "cgroup.event_control", "w") as ctl:
                ctl.write(f"{efd} {cfd} {arg}".rstrip())
        finally:
            os.close(cfd)  # the kernel holds its own reference once registered
    except OSError as e:
        os.close(efd)
        raise CgroupError(f"register a {control_file} event on", memory_dir, e) from e
    return efd


def v1_threshold(memory_dir: Path, threshold: int) -> int:
    """An eventfd that becomes readable when the v1 memory cgroup's usage crosses threshold
    (either way)."""
    return v1_event(memory_dir, "memory.usage_in_bytes", str(int(threshold)))


def v1_oom_notifier(memory_dir: Path) -> int:
    """An eventfd signalled when the v1 memory cgroup goes under_oom (with oom_kill_disable:
    a call waiting at its budget)."""
    return v1_event(memory_dir, "memory.oom_control")


def open_kernfs(path: Path) -> int:
    """An fd of a cgroup file to poll for POLLPRI change notifications (read once to arm)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError("open for notifications", path, e) from e
    with contextlib.suppress(OSError):
        os.pread(fd, 4096, 0)
    return fd


class Waker:
    """One thread polling notification fds; each fd carries a tag handed to on_wake."""

    def __init__(self, on_wake: Callable[[str], None]) -> None:
        self.on_wake = on_wake
        self._fds: dict[int, tuple[str, Kind, bool]] = {}  # fd -> tag, kind, owned
        self._lock = threading.Lock()
        self._poll = select.poll()
        self._kick_r, self._kick_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._poll.register(self._kick_r, select.POLLIN)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="wakeups", daemon=True)
        self._thread.start()

    def add(self, fd: int, tag: str, kind: Kind, owned: bool = True) -> None:
        """Watch fd; owned fds are closed when removed."""
        with self._lock:
            self._fds[fd] = (tag, kind, owned)
            self._poll.register(fd, select.POLLIN if kind == "eventfd" else select.POLLPRI)
        self._kick()

    def remove_tag(self, tag: str) -> None:
        """Stop watching (and close) every fd carrying tag."""
        with self._lock:
            gone = [fd for fd, (t, _, _) in self._fds.items() if t == tag]
            for fd in gone:
                _, _, owned = self._fds.pop(fd)
                with contextlib.suppress(KeyError, ValueError):
                    self._poll.unregister(fd)
                if owned:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        self._kick()

    def close(self) -> None:
        """Stop the thread and close every owned fd."""
        self._stop = True
        self._kick()
        self._thread.join(timeout=2)
        for tag in {t for t, _, _ in list(self._fds.values())}:
            self.remove_tag(tag)
        for fd in (self._kick_r, self._kick_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _kick(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._kick_w, b"x")

    def _run(self) -> None:
        while not self._stop:
            try:
                ready = self._poll.poll(1000)
            except InterruptedError:
                continue
            for fd, mask in ready:
                if fd == self._kick_r:
                    with contextlib.suppress(OSError):
                        os.read(self._kick_r, 4096)
                    continue
                with self._lock:
                    entry = self._fds.get(fd)
                if entry is None:
                    continue
                tag, kind, _ = entry
                self._rearm(fd, kind, mask)
                try:
                    self.on_wake(tag)
                except Exception:
                    log.exception("wake handler failed for %s", tag)

    def _rearm(self, fd: int, kind: Kind, mask: int) -> None:
        try:
            if kind == "eventfd":
                os.read(fd, 8)
            elif kind == "kernfs":
                os.pread(fd, 4096, 0)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ENODEV, errno.ENOENT):
                log.debug("re-arming fd %d: %s", fd, e)
        if mask & (select.POLLHUP | select.POLLNVAL) or (kind == "psi" and mask & select.POLLERR):
            # the cgroup is gone: stop polling this fd (its owner removes the tag)
            with self._lock:
                entry = self._fds.pop(fd, None)
                with contextlib.suppress(KeyError, ValueError):
                    self._poll.unregister(fd)
            if entry and entry[2]:
                with contextlib.suppress(OSError):
                    os.close(fd)
