"""One thread accepts on every listening socket of agentshimd and survives fd exhaustion.

Each connection is served on its own short-lived thread, and each owner (a container, or the
control socket) may hold at most `max_conns` connections and `max_bytes` of unread request
bytes at once: one container flooding its socket gets refusals, never the daemon's memory or
threads. When accept() fails with EMFILE/ENFILE the acceptor gives back a reserve fd, accepts
the waiting connection, closes it (the wrapper then runs the call unmanaged, fail-open), takes
the reserve fd again and backs off briefly; nothing stops accepting for good. Removing a socket
unregisters it from the selector before closing it, so no thread is left blocked in accept().
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("agentshimd")

MAX_CONNS = 64  # per owner: a wrapper holds one connection per tool-call start or end
MAX_PENDING_BYTES = 8 << 20  # per owner: unread request bytes across its connections
EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
BACKOFF_S = 0.05


class ByteBudget:
    """Bytes an owner's connections may hold unread at once (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        """Reserve n bytes; False (nothing reserved) when that would pass the limit."""
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used = max(0, self.used - n)


@dataclass
class Owner:
    """What one owner's connections are allowed, and are using."""

    key: str | None
    conns: int = 0
    budget: ByteBudget = field(default_factory=lambda: ByteBudget(MAX_PENDING_BYTES))
    refused: int = 0


Handler = Callable[[socket.socket, "str | None", ByteBudget], None]
Refuse = Callable[[socket.socket, str], None]


class Acceptor:
    """Accepts on registered listening sockets; hands each connection to handle(conn, key,
    budget) on a new thread, or to refuse(conn, reason) when the owner is over its caps."""

    def __init__(self, handle: Handler, refuse: Refuse, max_conns: int = MAX_CONNS,
                 max_bytes: int = MAX_PENDING_BYTES) -> None:
        self.handle = handle
        self.refuse = refuse
        self.max_conns = max_conns
        self.max_bytes = max_bytes
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._owners: dict[str | None, Owner] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reserve: int | None = self._take_reserve()
        self.exhausted = 0  # accept() failures for lack of fds or memory
        self.last_error = ""
        self._last_warn = 0.0

    # --- sockets ----------------------------------------------------------------------------
    def add(self, sock: socket.socket, key: str | None) -> None:
        """Accept on sock for owner key (a container id, None for the control socket)."""
        sock.setblocking(False)
        with self._lock:
            self._owners.setdefault(key, Owner(key, budget=ByteBudget(self.max_bytes)))
            self._sel.register(sock, selectors.EVENT_READ, key)

    def remove(self, sock: socket.socket) -> None:
        """Stop accepting on sock and close it."""
        with self._lock, contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(sock)
        sock.close()

    def forget(self, key: str | None) -> None:
        """Drop an owner's counters (its socket was removed)."""
        with self._lock:
            self._owners.pop(key, None)

    # --- lifetime ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="acceptor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            for key in list(self._sel.get_map().values()):
                with contextlib.suppress(OSError):
                    key.fileobj.close()  # type: ignore[union-attr]
            self._sel.close()

    def status(self) -> dict[str, Any]:
        """Counters for agentshimd's status reply."""
        with self._lock:
            return {"alive": self._thread is not None and self._thread.is_alive(),
                    "sockets": len(self._sel.get_map()), "exhausted": self.exhausted,
                    "last_error": self.last_error,
                    "connections": sum(o.conns for o in self._owners.values()),
                    "refused": sum(o.refused for o in self._owners.values())}

    # --- the loop ---------------------------------------------------------------------------
    def _take_reserve(self) -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._sel.select(timeout=0.5)
            except (OSError, ValueError) as e:  # a socket closed under us: go round again
                log.debug("select: %s", e)
                time.sleep(BACKOFF_S)
                continue
            for skey, _ in events:
                self._accept(skey.fileobj, skey.data)  # type: ignore[arg-type]

    def _accept(self, sock: socket.socket, key: str | None) -> None:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno in EXHAUSTED:
                self._exhausted(sock, e)
            elif e.errno in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
                with self._lock, contextlib.suppress(KeyError, ValueError, OSError):
                    self._sel.unregister(sock)
            else:
                self.last_error = f"accept: {e}"
                log.warning("accept failed: %s", e)
            return
        conn.setblocking(True)
        with self._lock:
            owner = self._owners.get(key)
            over = owner is None or owner.conns >= self.max_conns
            if owner is not None:
                if over:
                    owner.refused += 1
                else:
                    owner.conns += 1
        if over:
            self._refuse(conn, "too many connections from this container "
                         f"(at most {self.max_conns} at once)")
            return
        try:
            threading.Thread(target=self._serve, args=(conn, owner), daemon=True).start()
        except RuntimeError as e:  # no thread to be had: refuse, keep accepting
            with self._lock:
                owner.conns -= 1  # type: ignore[union-attr]
            self.last_error = f"thread: {e}"
            self._refuse(conn, "agentshimd is out of threads")

    def _serve(self, conn: socket.socket, owner: Owner) -> None:
        try:
            self.handle(conn, owner.key, owner.budget)
        finally:
            with self._lock:
                owner.conns -= 1

    def _refuse(self, conn: socket.socket, reason: str) -> None:
        try:
            self.refuse(conn, reason)
        except Exception:  # a refusal must never take the acceptor down
            log.debug("refusal failed", exc_info=True)
        finally:
            conn.close()

    def _exhausted(self, sock: socket.socket, e: OSError) -> None:
        self.exhausted += 1
        self.last_error = f"accept: {e.strerror} (out of file descriptors)"
        now = time.monotonic()
        if now - self._last_warn > 10:
            self._last_warn = now
            log.warning("accept failed: %s; shedding connections until fds are free "
                        "(%d so far)", e.strerror, self.exhausted)
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
            with contextlib.suppress(OSError):
                conn, _ = sock.accept()
                conn.close()  # the peer sees EOF: its wrapper runs the call unmanaged
            self._reserve = self._take_reserve()
        time.sleep(BACKOFF_S)
