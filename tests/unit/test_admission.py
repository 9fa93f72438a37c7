"""Admission's decisions and its waiting room, without cgroups (rooms are given)."""

from __future__ import annotations

import threading
import time

from agentshim.enforce.admission import (
    Admitted,
    PeakHistory,
    Room,
    Waiter,
    WaitingRoom,
    fits,
)

G = 1 << 30


def test_fits_under_the_mark_and_always_when_not_near_alone_or_unlimited():
    assert fits(Room("c", usage=3 * G, limit=4 * G, running=1), need=G // 4)
    assert not fits(Room("c", usage=3 * G, limit=4 * G, running=1), need=G)
    assert not fits(Room("c", usage=3 * G, limit=4 * G, running=1, reserved=G // 2), need=G // 4)
    assert fits(Room("c", usage=2 * G, limit=4 * G, running=1), need=2 * G)  # not near (50%)
    assert fits(Room("c", usage=3 * G, limit=4 * G, running=0), need=2 * G)  # alone
    assert fits(Room("c", usage=3 * G, limit=0, running=3), need=2 * G)  # no limit


def test_need_prefers_intent_then_p90_then_grant():
    h = PeakHistory()
    assert h.need("test", 2 * G, None) == (2 * G, "grant")
    for mb in (100, 200, 300, 400, 500, 600, 700, 800, 900, 1000):
        h.add("test", mb << 20)
    need, src = h.need("test", 2 * G, None)
    assert need == 1000 << 20 and src.startswith("P90")
    assert h.need("test", 2 * G, 300 << 20) == (300 << 20, "intent")
    assert h.need("test", 512 << 20, None)[0] == 512 << 20  # never more than the grant
    assert h.need("build", G, None) == (G, "grant")  # another category has no history


def _admit_in_thread(room, w, rooms, need, timeout, shares=lambda o: True, gone=lambda: False):
    out: dict[str, Admitted] = {}
    held = threading.Event()

    def run():
        out["a"] = room.admit(w, rooms, need, timeout, shares, gone,
                              on_wait=lambda t, why: held.set())
    t = threading.Thread(target=run)
    t.start()
    return t, out, held


def test_a_call_waits_until_it_fits_then_runs():
    room = WaitingRoom()
    usage = {"v": 3 * G}
    rooms = lambda: [Room("c", usage["v"], 4 * G, 1)]  # noqa: E731
    t, out, held = _admit_in_thread(room, Waiter(1, time.monotonic(), "c"), rooms, G, 10)
    assert held.wait(5)
    assert room.waiting() == 1
    usage["v"] = G
    room.wake()
    t.join(5)
    a = out["a"]
    assert not a.timed_out and a.waited_s > 0 and "c at 75%" in a.why
    assert room.waiting() == 0


def test_priority_then_fifo_order():
    room = WaitingRoom()
    free = threading.Event()
    rooms = lambda: [Room("c", G if free.is_set() else 4 * G, 4 * G, 1)]  # noqa: E731
    order: list[str] = []
    lock = threading.Lock()

    def go(name, rank, arrived):
        w = Waiter(rank, arrived, "c")
        room.admit(w, rooms, G, 10, lambda o: True, lambda: False, on_wait=lambda t, why: None)
        with lock:
            order.append(name)
        room.release(w)  # running: from here its usage counts, not its pending need
    now = time.monotonic()
    threads = [threading.Thread(target=go, args=a) for a in
               (("low", 2, now), ("normal-late", 1, now + 2), ("normal-early", 1, now + 1))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while room.waiting() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert room.waiting() == 3
    free.set()
    room.wake()
    for t in threads:
        t.join(5)
    assert order == ["normal-early", "normal-late", "low"]


def test_an_admitted_call_holds_its_need_until_released():
    room = WaitingRoom()
    rooms = lambda: [Room("c", 15 * G // 2, 10 * G, 1)]  # noqa: E731  (7.5G used, mark 8.5G)
    need = 6 * G // 10
    first = Waiter(1, time.monotonic(), "c")
    assert room.admit(first, rooms, need, 10, lambda o: True, lambda: False,
                      on_wait=lambda t, why: None).waited_s == 0
    # a second call does not fit while the first has not started to grow
    second = Waiter(1, time.monotonic(), "c")
    a = room.admit(second, rooms, need, 0.3, lambda o: True, lambda: False,
                   on_wait=lambda t, why: None)
    assert a.timed_out
    room.release(first)
    room.release(second)
    assert room.admit(Waiter(1, time.monotonic(), "c"), rooms, need, 0.3, lambda o: True,
                      lambda: False, on_wait=lambda t, why: None).waited_s == 0


def test_timeout_and_caller_gone():
    room = WaitingRoom()
    full = lambda: [Room("c", 4 * G, 4 * G, 1)]  # noqa: E731
    a = room.admit(Waiter(1, time.monotonic(), "c"), full, G, 0.3, lambda o: True,
                   lambda: False, on_wait=lambda t, why: None)
    assert a.timed_out and a.waited_s >= 0.3
    a = room.admit(Waiter(1, time.monotonic(), "c"), full, G, 0, lambda o: True,
                   lambda: False, on_wait=lambda t, why: None)
    assert not a.timed_out and a.waited_s == 0  # admission_timeout 0: admission is off
    a = room.admit(Waiter(1, time.monotonic(), "c"), full, G, 10, lambda o: True,
                   lambda: True, on_wait=lambda t, why: None)
    assert a.gave_up and room.waiting() == 0


def test_waiters_of_other_scopes_do_not_block():
    room = WaitingRoom()
    full = lambda: [Room("a", 4 * G, 4 * G, 1)]  # noqa: E731
    t, out, held = _admit_in_thread(room, Waiter(0, time.monotonic(), "a"), full, G, 1,
                                    shares=lambda o: o.container == "a")
    assert held.wait(5)
    free = lambda: [Room("b", 0, 4 * G, 1)]  # noqa: E731
    a = room.admit(Waiter(2, time.monotonic(), "b"), free, G, 5,
                   lambda o: o.container == "b", lambda: False, on_wait=lambda t, why: None)
    assert a.waited_s == 0 and not a.timed_out
    room.wake()
    t.join(10)
