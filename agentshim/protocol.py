"""Newline-delimited JSON over unix stream sockets: one request, one reply per connection.

Used by the wrapper<->broker protocol (docs/wrapper.md) and by the hooks<->agentshimd control
protocol (docs/daemon.md).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path
from typing import Any, Protocol

MAX_MESSAGE = 4 << 20  # Claude Code scripts can be long; anything beyond this is refused


class ProtocolError(Exception):
    """A peer sent something that is not one JSON object line, or nothing in time."""


class DaemonUnavailable(Exception):
    """agentshimd could not be reached (no socket, refused, or no answer in time)."""


class Budget(Protocol):
    """Bytes several connections share (agentshim.acceptor.ByteBudget)."""

    def take(self, n: int) -> bool: ...
    def give(self, n: int) -> None: ...


def read_line(sock: socket.socket, timeout_s: float, max_bytes: int = MAX_MESSAGE,
              budget: Budget | None = None) -> bytes:
    """Read bytes up to the first newline, within timeout_s and max_bytes; with a budget,
    every byte held is taken from it (and given back on return) so that many connections of
    one peer cannot hold more than the budget between them."""
    deadline = time.monotonic() + timeout_s
    buf = bytearray()
    held = 0
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("no complete message in time")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError as e:
                raise ProtocolError("no complete message in time") from e
            except OSError as e:
                raise ProtocolError(f"receive failed: {e.strerror or e}") from e
            if not chunk:
                raise ProtocolError("peer closed the connection before a full message")
            if budget is not None:
                if not budget.take(len(chunk)):
                    raise ProtocolError("too many request bytes pending from this container")
                held += len(chunk)
            buf += chunk
            if len(buf) > max_bytes:
                raise ProtocolError(f"message longer than {max_bytes} bytes")
        return bytes(buf[: buf.index(b"\n")])
    finally:
        if budget is not None and held:
            budget.give(held)


def decode(line: bytes) -> dict[str, Any]:
    """Parse one message; it must be a JSON object."""
    try:
        obj = json.loads(line.decode("utf-8", errors="replace"))
    except RecursionError as e:
        raise ProtocolError("JSON nested too deeply") from e
    except ValueError as e:
        raise ProtocolError(f"not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ProtocolError("message is not a JSON object")
    return obj


def encode(obj: dict[str, Any]) -> bytes:
    """One message line."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end (SO_PEERCRED, host pid namespace)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def request(path: Path, obj: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to the socket at path and return the reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
        except OSError as e:
            raise DaemonUnavailable(f"cannot connect to {path}: {e.strerror or e}") from e
        try:
            s.sendall(encode(obj))
            return decode(read_line(s, timeout_s))
        except (ProtocolError, OSError) as e:
            raise DaemonUnavailable(f"{path}: {e}") from e
    finally:
        s.close()
