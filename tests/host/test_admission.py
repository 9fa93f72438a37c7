"""Admission at call start for real: a private agentshimd, real cgroups standing in for a
container, real processes holding memory. A call that would not fit waits before it runs
(its process is not moved, and allocates nothing), then runs when memory frees; priority
orders the waiters; admission_timeout bounds the wait; a nested call is never queued; a caller
that goes away leaves nothing behind. The same tests run on pure v2 in the VM
(tests/v2/test_admission_v2.py)."""

from __future__ import annotations

from tests.daemon_support import end_call, register, start_call, wait_for

# 600M container: a 440M call puts it near its limit (over 70%) and leaves no room for another
# 300M (85% mark: 510M)
POLICY = ("memory: {{total: 600M, framework_protect: 32M, tool_default: 400M}}\n"
          "admission_timeout: {timeout}\nfreeze_timeout: 60s\n")



def holder(sock, tree, mb=440):
    """A running call holding mb of memory until released."""
    c = start_call(sock, tree.framework, "python hold.py", mb=mb, step_mb=40,
                   intent=f"memory={mb + 20}M")
    assert c.reply["ok"] and c.read_until("done")
    return c


def finish(sock, tree, c):
    c.release()
    c.proc.wait(timeout=10)
    return end_call(sock, tree.framework, c.seq, 0)


def test_a_call_into_a_full_container_waits_then_runs(daemon, scratch):
    tree, sock = register(daemon, scratch, "c1", POLICY.format(timeout="30s"))
    a = holder(sock, tree)
    b = start_call(sock, tree.framework, "python big.py", mb=16, intent="memory=300M",
                   answered=False)
    try:
        wait_for(b.held, what="b told to wait")
        assert daemon.status()["waiting_calls"] == 1
        assert b.reply == {}  # not answered: it has not run, it is in no call cgroup
        finish(sock, tree, a)
        reply = b.await_reply(timeout_s=20)
        assert reply["ok"] and reply["call"] == a.seq + 1
        assert "waited" in reply["notes"] and "for memory" in reply["notes"]
        assert b.read_until("done")
        finish(sock, tree, b)
        rec = daemon.records("c1")[-1]
        assert rec["call"] == b.seq and rec["admission_wait_s"] > 0
        assert "container" in rec["admission"]
        ev = [e for e in daemon.events("c1") if e["action"] == "admission_wait"]
        assert ev and ev[0]["call"] == b.seq and ev[0]["need_from"] == "intent"
        assert not ev[0]["timed_out"]
    finally:
        a.stop()
        b.stop()
    wait_for(lambda: not tree.tools.children(), timeout_s=10, what="no call cgroup left")


def test_a_high_priority_call_is_admitted_before_a_waiting_low_one(daemon, scratch):
    tree, sock = register(daemon, scratch, "c1", POLICY.format(timeout="30s"))
    a = holder(sock, tree)
    low = start_call(sock, tree.framework, "python low.py", intent="memory=300M,priority=low",
                     answered=False)
    try:
        wait_for(low.held, what="low told to wait")
        high = start_call(sock, tree.framework, "python high.py", intent="memory=300M",
                          answered=False)
        try:
            wait_for(high.held, what="high told to wait")
            finish(sock, tree, a)
            assert high.await_reply(timeout_s=20)["ok"]
            assert low.await_reply(timeout_s=20)["ok"]
            assert high.seq < low.seq  # numbers are given when a call is admitted
            finish(sock, tree, high)
            finish(sock, tree, low)
        finally:
            high.stop()
    finally:
        a.stop()
        low.stop()


def test_admission_timeout_lets_the_call_run_with_a_notice(daemon, scratch):
    tree, sock = register(daemon, scratch, "c1", POLICY.format(timeout="1s"))
    a = holder(sock, tree)
    b = start_call(sock, tree.framework, "python big.py", intent="memory=300M",
                   answered=False)
    try:
        reply = b.await_reply(timeout_s=20)
        assert reply["ok"] and "admission_timeout" in reply["notes"]
        finish(sock, tree, b)
        rec = daemon.records("c1")[-1]
        assert rec["admission_wait_s"] >= 0.9
        ev = [e for e in daemon.events("c1") if e["action"] == "admission_wait"]
        assert ev and ev[0]["timed_out"]
    finally:
        a.stop()
        b.stop()


def test_a_nested_call_and_a_lone_call_are_never_queued(daemon, scratch):
    tree, sock = register(daemon, scratch, "c1", POLICY.format(timeout="30s"))
    a = start_call(sock, tree.framework, "python big.py", intent="memory=550M")
    assert a.reply["ok"] and not a.holds  # past the mark on its own: admitted, it is alone
    try:
        inner = start_call(sock, tree.call(a.seq), "pytest -x", intent="memory=300M")
        assert inner.reply["ok"] and inner.reply.get("nested") and not inner.holds
        inner.release()
        inner.proc.wait(timeout=10)
    finally:
        a.stop()


def test_a_caller_that_goes_away_while_waiting_leaves_nothing(daemon, scratch):
    tree, sock = register(daemon, scratch, "c1", POLICY.format(timeout="30s"))
    a = holder(sock, tree)
    b = start_call(sock, tree.framework, "python big.py", intent="memory=300M",
                   answered=False)
    try:
        wait_for(b.held, what="b told to wait")
        b.proc.kill()  # the agent interrupted the command
        b.proc.wait(timeout=10)
        wait_for(lambda: daemon.status()["waiting_calls"] == 0, what="the waiter dropped")
        finish(sock, tree, a)
        assert [r["call"] for r in daemon.records("c1")] == [a.seq]
        assert daemon.status()["containers"][0]["next_call"] == a.seq + 1
    finally:
        a.stop()
        b.stop()
    wait_for(lambda: not tree.tools.children(), timeout_s=10, what="no call cgroup left")
