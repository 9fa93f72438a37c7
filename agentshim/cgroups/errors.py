"""The one error type of the cgroup layer: it names the operation, the path and the errno."""

from __future__ import annotations

import errno as errno_mod
import os


class CgroupError(OSError):
    """A cgroupfs operation failed. str() reads like: `write '+memory' to /x/cgroup.subtree_control:
    Device or resource busy (EBUSY)`."""

    def __init__(self, op: str, path: os.PathLike[str] | str, err: OSError | None = None,
                 detail: str = "") -> None:
        code = err.errno if err is not None and err.errno is not None else 0
        super().__init__(code, detail or (err.strerror if err is not None else "failed"))
        self.op = op
        self.path = str(path)
        self.detail = detail

    def __str__(self) -> str:
        name = errno_mod.errorcode.get(self.errno or 0, "")
        reason = self.detail or self.strerror or "failed"
        suffix = f" ({name})" if name else ""
        return f"{self.op} {self.path}: {reason}{suffix}"
