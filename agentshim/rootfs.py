"""Reading files out of a container's rootfs without letting the image choose a host path.

The precreate hook has to find the image's bash and bind-mount it at a side path. Every name in
the rootfs is the image's (or an earlier agent run's) to choose: a symlink may point at /proc,
into a directory a volume will cover, at itself, or at a FIFO. So nothing here ever hands a
path from the rootfs to the host kernel or to the runtime: names are resolved one component at
a time from directory file descriptors opened with O_NOFOLLOW, symlinks are read and
interpreted relative to the rootfs (never the host's /), and the file found is copied into a
root-owned, content-addressed store that the mount is then made from.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MAX_LINKS = 40
MAX_BINARY = 64 << 20  # a bash larger than this is not a bash


class RootfsError(Exception):
    """A path inside the rootfs could not be resolved to a regular file; says why."""

    def __init__(self, msg: str, err: int = 0) -> None:
        super().__init__(msg)
        self.errno = err


def _components(path: str) -> list[str]:
    return [p for p in PurePosixPath(path).parts if p not in ("/", "", ".")]


@dataclass
class Resolved:
    """A regular file found in the rootfs: its container path, an fd open on it, and every
    container path looked at on the way (a mount over any of them changes what is found)."""

    path: str
    fd: int
    visited: list[str] = field(default_factory=list)


def resolve(rootfs_fd: int, path: str, max_links: int = MAX_LINKS) -> Resolved:
    """Resolve `path` as the container would, from an fd of its rootfs.

    The fd of the result is open O_RDONLY on the final regular file (the caller closes it).
    Symlinks are followed inside the rootfs only; `..` stops at the root. Raises RootfsError
    (with the errno, if any) for a loop, a missing name, a name too long, or a non-regular
    file."""
    parts = _components(path)
    stack: list[tuple[str, int]] = []  # (name, dir fd) below the root
    links = 0
    visited: list[str] = []

    def cur_fd() -> int:
        return stack[-1][1] if stack else rootfs_fd

    try:
        while parts:
            name = parts.pop(0)
            if name == "..":
                if stack:
                    os.close(stack.pop()[1])
                continue
            visited.append("/" + "/".join([n for n, _ in stack] + [name]))
            try:
                st = os.stat(name, dir_fd=cur_fd(), follow_symlinks=False)
            except OSError as e:
                raise RootfsError(f"{name!r}: {e.strerror}", e.errno) from e
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > max_links:
                    raise RootfsError(f"more than {max_links} symlinks", errno.ELOOP)
                try:
                    target = os.readlink(name, dir_fd=cur_fd())
                except OSError as e:
                    raise RootfsError(f"{name!r}: {e.strerror}", e.errno) from e
                if target.startswith("/"):
                    while stack:
                        os.close(stack.pop()[1])
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            if parts:  # an intermediate component: must be a directory
                if not stat.S_ISDIR(st.st_mode):
                    raise RootfsError(f"{name!r} is not a directory", errno.ENOTDIR)
                try:
                    fd = os.open(name, flags | os.O_DIRECTORY | os.O_RDONLY, dir_fd=cur_fd())
                except OSError as e:
                    raise RootfsError(f"{name!r}: {e.strerror}", e.errno) from e
                stack.append((name, fd))
                continue
            if stat.S_ISDIR(st.st_mode):
                raise RootfsError(f"{name!r} is a directory", errno.EISDIR)
            if not stat.S_ISREG(st.st_mode):
                raise RootfsError(f"{name!r} is not a regular file", errno.EINVAL)
            try:
                fd = os.open(name, flags | os.O_RDONLY, dir_fd=cur_fd())
            except OSError as e:
                raise RootfsError(f"{name!r}: {e.strerror}", e.errno) from e
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between stat and open
                os.close(fd)
                raise RootfsError(f"{name!r} is not a regular file", errno.EINVAL)
            return Resolved(visited[-1], fd, visited)
        raise RootfsError("the path names a directory", errno.EISDIR)
    finally:
        for _, fd in stack:
            os.close(fd)


def open_rootfs(rootfs: Path) -> int:
    """An O_PATH-like directory fd of the rootfs (the runtime's path, trusted)."""
    return os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def copy_to_store(fd: int, store: Path, max_bytes: int = MAX_BINARY) -> Path:
    """Copy the file open at fd into store/<sha256> (root-owned, 0755, written once) and
    return that path. Raises RootfsError when the file is larger than max_bytes."""
    size = os.fstat(fd).st_size
    if size > max_bytes:
        raise RootfsError(f"{size} bytes is larger than {max_bytes}", errno.EFBIG)
    data = bytearray()
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        data += chunk
        if len(data) > max_bytes:
            raise RootfsError(f"larger than {max_bytes} bytes", errno.EFBIG)
    digest = hashlib.sha256(data).hexdigest()
    store.mkdir(parents=True, exist_ok=True, mode=0o755)
    dest = store / digest
    if dest.exists():
        return dest
    tmp = store / f".{digest}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return dest


def covered_by(paths: list[str], destinations: list[str]) -> str | None:
    """The first mount destination that covers (or is) one of the container `paths`."""
    for path in paths:
        p = PurePosixPath(path)
        for d in destinations:
            dp = PurePosixPath("/" + "/".join(_components(d)))
            if p == dp or dp in p.parents:
                return d
    return None
