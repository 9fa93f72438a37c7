"""End to end with real podman: the hooks, agentshimd, the static wrapper, real tool calls.

Needs: root, podman with runc (setup-host.sh), the test images (tests/images/), a C compiler.
"""

from __future__ import annotations

import time

import pytest

from agentshim.cgroups import Cgroup, detect_layout
from agentshim.units import MIB
from tests.podman_support import (
    PY_IMAGE,
    SHIM,
    agentshim_fixture,
    assert_in_call,
    assert_removed,
    cgroup_lines,
    container_cgroup,
    managed_hierarchies,
    run_container,
)

# podman cuts --annotation values at newlines and commas: ';' separates lines instead
POLICY = ("memory:;  total: 1G;  framework_protect: 64M;  tool_default: 256M;"
          "categories:;  test:;    match: [run-tests];    memory: 384M")

ash = agentshim_fixture("ashim-e2e", python=True)


@pytest.fixture
def container(ash):
    with run_container(ash.hooked, ash.name(), "--annotation",
                       f"io.agentshim.policy={POLICY}") as c:
        yield c


def test_tool_call_forms_land_in_their_own_cgroups(container, ash):
    c = container
    root = Cgroup.of_pid(detect_layout(), c.pid())
    assert root.name == "framework", "the agent process was not moved into framework/"
    # from inside too: pid 1 (the agent, here `sleep`) is in framework/ in every hierarchy
    inside = cgroup_lines(c.exec("cat", "/proc/1/cgroup", check=True).stdout)
    assert all(inside[h].endswith("/framework") for h in managed_hierarchies()), inside
    forms = [
        ["bash", "-c", "cat /proc/self/cgroup"],
        ["bash", "-lc", "cat /proc/self/cgroup"],                  # Codex
        ["bash", "-c", "-l", "cat /proc/self/cgroup"],             # Claude Code
        ["bash", "--login", "-c", "cat /proc/self/cgroup"],
        ["sh", "-c", "bash -c 'cat /proc/self/cgroup'"],           # bash started by a program
    ]
    for n, argv in enumerate(forms, start=1):
        r = c.exec(*argv, check=True)
        assert r.stderr == "", r.stderr
        assert_in_call(r.stdout, n)
    recs = ash.records(c.id)
    assert [r["call"] for r in recs] == [1, 2, 3, 4, 5]
    assert [r["command"] for r in recs] == ["cat /proc/self/cgroup"] * 5
    assert all(r["end"] == "reported" and r["exit"] == 0 for r in recs), recs
    # the calls' cgroups are gone, the framework is untouched
    assert list((root.primary.parent / "tools").glob("call-*")) == []
    assert Cgroup.of_pid(detect_layout(), c.pid()).name == "framework"


def test_categories_intent_and_exit_status(container, ash):
    c = container
    # Claude Code's form, with a category from the policy and a declared intent
    r = c.exec("bash", "-c", "-l",
               "echo run-tests; x=$(head -c 80000000 /dev/zero | tr '\\0' a); echo ${#x}",
               env={"AGENTSHIM_INTENT": "memory=300M"})
    assert r.stdout.split() == ["run-tests", "80000000"], r.stderr
    assert c.exec("bash", "-c", "exit 7").returncode == 7
    # not tool calls: the image's own bash, untouched, not in tools/
    r = c.exec("bash", "-s", input="echo $BASH_VERSION; cat /proc/self/cgroup")
    assert r.stdout.startswith("5.") and "/tools/" not in r.stdout
    recs = ash.records(c.id)
    assert [r["call"] for r in recs] == [1, 2]
    big = recs[0]
    assert big["category"] == "test" and big["grant_bytes"] == 300 * MIB
    assert big["peak_bytes"] > 80_000_000 and big["exit"] == 0
    assert recs[1]["exit"] == 7


def test_python_call_peak_is_recorded_within_ten_percent(ash):
    """A realistic tool call (a python snippet in the python image) allocating 300 MiB."""
    policy = "memory:;  total: 2G;  tool_default: 1G"
    with run_container(ash.hooked, ash.name(), "--annotation", f"io.agentshim.policy={policy}",
                       image=PY_IMAGE) as c:
        snippet = ("import time; b = bytearray(300 << 20)\n"
                   "for i in range(0, len(b), 4096): b[i] = 1\n"
                   "time.sleep(0.2); print(len(b) >> 20)")
        r = c.exec("bash", "-lc", f"python3 -c '{snippet}'")
        assert r.returncode == 0 and r.stdout == "300\n", r.stderr
        rec = ash.records(c.id)[-1]
        assert rec["category"] == "python" and rec["exit"] == 0
        want = 300 * MIB
        assert abs(rec["peak_bytes"] - want) <= want * 0.10, (
            f"peak {rec['peak_bytes'] / MIB:.1f} MiB is not within 10% of 300 MiB")


def test_podman_exec_runs_and_its_bash_calls_are_managed(container, ash):
    """podman exec of a program that is not bash runs where the runtime puts it (the container
    cgroup, outside framework/ and tools/ on this host); the bash -c calls it makes are
    managed like the agent's."""
    c = container
    root = container_cgroup(c.pid())
    r = c.exec("cat", "/proc/self/cgroup", check=True)
    where = cgroup_lines(r.stdout)
    assert "/tools/" not in where["memory"]
    assert where["memory"] == "/" + str(root.dirs["memory"].relative_to(
        detect_layout().v1["memory"])), where
    r = c.exec("sh", "-c", "for i in 1 2 3; do bash -c 'cat /proc/self/cgroup'; echo --; done",
               check=True)
    for n, text in enumerate(r.stdout.split("--\n")[:3], start=1):
        assert_in_call(text, n)
    assert [x["call"] for x in ash.records(c.id)] == [1, 2, 3]


def test_no_daemon_means_fail_open_and_stop_leaves_nothing(ash):
    c = run_container(ash.hooked, ash.name(), "--annotation", "io.agentshim.enable=true")
    container_cg = container_cgroup(c.pid())
    slot = ash.slot_dir(c.id)
    (slot / "broker.sock").unlink()  # the broker is gone
    r = c.exec("bash", "-c", "echo still works")
    assert r.stdout == "still works\n"
    assert r.stderr.count("agentshim: running unmanaged") == 1
    assert len(r.stderr.splitlines()) == 1, r.stderr
    c.rm()
    time.sleep(0.5)
    assert_removed(container_cg)
    assert not slot.exists()
    assert (ash.state_dir / "summaries" / f"{c.id}.json").exists()


def test_bad_policy_refuses_the_container(ash):
    name = ash.name()
    r = ash.hooked("run", "--rm", "--name", name, "--annotation",
                   "io.agentshim.policy=memory: {total: lots}", "localhost/agentshim-test",
                   "true", check=False)
    assert r.returncode != 0
    # podman 4.3 hides a precreate hook's stderr: the reason is logged for the operator
    last = (ash.state_dir / "refusals.log").read_text().splitlines()[-1]
    assert "memory.total: bad size 'lots'" in last
    # through the runtime shim, podman shows the reason itself
    r = ash.podman("--runtime", str(SHIM), "run", "--rm", "--annotation",
                   "io.agentshim.policy=memory: {total: lots}", "localhost/agentshim-test",
                   "true", check=False)
    assert r.returncode != 0 and "memory.total: bad size 'lots'" in r.stderr


def test_call_stuck_at_its_budget_is_killed_alone_and_told(ash):
    policy = "memory:;  total: 1G;  tool_default: 64M;freeze_timeout: 1s"
    with run_container(ash.hooked, ash.name(), "--annotation",
                       f"io.agentshim.policy={policy}") as c:
        t0 = time.monotonic()
        r = c.exec("bash", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}")
        took = time.monotonic() - t0
        assert r.returncode == 137, (r.returncode, r.stderr)
        assert "agentshim: call 1 (other) was killed" in r.stderr
        assert "64M" in r.stderr
        assert took < 20
        assert c.exec("bash", "-c", "echo alive").stdout == "alive\n"
        state = c.podman("inspect", c.name, "--format", "{{.State.Status}}").stdout.strip()
        assert state == "running"


def test_agentshimd_stopped_then_restarted(ash):
    """agentshimd stopped: calls still run, one warning each; started again, it adopts the
    running container from its state on disk and manages its calls again."""
    from agentshim.hooks import ensure_daemon

    with run_container(ash.hooked, ash.name(), "--annotation", "io.agentshim.enable=true") as c:
        assert c.exec("bash", "-c", "true").returncode == 0
        ash.stop_daemon()
        r = c.exec("bash", "-c", "cat /proc/self/cgroup; exit 3")
        assert r.returncode == 3
        assert "/tools/" not in r.stdout
        assert len(r.stderr.splitlines()) == 1
        assert r.stderr.startswith("agentshim: running unmanaged (")
        ensure_daemon()
        r = c.exec("bash", "-c", "cat /proc/self/cgroup")
        assert r.stderr == "" and "/tools/call-2" in cgroup_lines(r.stdout)["memory"]
        assert [x["call"] for x in ash.records(c.id)] == [1, 2]
