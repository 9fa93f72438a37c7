"""End to end with real podman: the hooks, agentshimd, the static wrapper, real tool calls.

Needs: root, podman with runc (setup-host.sh), the test image (tests/images/), a C compiler.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agentshim import paths
from agentshim.cgroups import Cgroup, detect_layout

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/agentshim-test:latest"
# podman cuts --annotation values at newlines and commas: ';' separates lines instead
POLICY = ("memory:;  total: 1G;  framework_protect: 64M;  tool_default: 256M;"
          "categories:;  test:;    match: [run-tests];    memory: 384M")


def podman(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check,
                          timeout=120, **kw)


@pytest.fixture(scope="module")
def hooks_dir(tmp_path_factory) -> Path:
    """hooks.d JSON pointing at this checkout, with private run/state dirs passed to the hooks
    (and so to the agentshimd they start), stopped at the end."""
    if os.geteuid() != 0 or shutil.which("podman") is None:
        pytest.skip("needs root and podman (run packaging/setup-host.sh)")
    subprocess.run(["make", "-s", "-C", str(REPO / "wrapper")], check=True)
    subprocess.run([str(REPO / "tests/images/build-test-image.sh")], check=True)
    d = tmp_path_factory.mktemp("hooks.d")
    private = tmp_path_factory.mktemp("agentshim")
    env = {"AGENTSHIM_RUN_DIR": str(private / "run"),
           "AGENTSHIM_STATE_DIR": str(private / "state")}
    agentshim = Path(sys.executable).parent / "agentshim"
    for tmpl in (REPO / "hooks").glob("*.json.in"):
        spec = json.loads(tmpl.read_text().replace("@AGENTSHIM@", str(agentshim)))
        spec["hook"]["env"] = [f"{k}={v}" for k, v in env.items()] + [
            f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}"]
        (d / tmpl.name.removesuffix(".in")).write_text(json.dumps(spec))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield d
    lock = private / "run" / "agentshimd.lock"
    if lock.exists() and lock.read_text().strip().isdigit():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(lock.read_text()), signal.SIGTERM)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def container(hooks_dir):
    name = f"ashim-e2e-{uuid.uuid4().hex[:8]}"
    r = podman("--hooks-dir", str(hooks_dir), "run", "-d", "--name", name,
               "--annotation", f"io.agentshim.policy={POLICY}", IMAGE, "sleep", "600",
               check=False)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    yield name, cid
    podman("rm", "-f", "-t", "0", name, check=False)


def call_cgroup_of(text: str) -> str:
    """The memory-hierarchy path in /proc/self/cgroup text."""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1] in ("memory", ""):
            return parts[2]
    return ""


def test_tool_calls_land_in_their_own_cgroups(container, hooks_dir):
    name, cid = container
    pid = int(podman("inspect", name, "--format", "{{.State.Pid}}").stdout)
    root = Cgroup.of_pid(detect_layout(), pid)
    assert root.name == "framework", "the agent process was not moved into framework/"
    r = podman("exec", name, "bash", "-c", "cat /proc/self/cgroup")
    assert "/tools/call-1" in call_cgroup_of(r.stdout)
    r = podman("exec", name, "bash", "-lc", "echo $((6*7)); cat /proc/self/cgroup")
    assert r.stdout.splitlines()[0] == "42"
    assert "/tools/call-2" in call_cgroup_of(r.stdout)
    # Claude Code's form, with a category from the policy and a declared intent
    r = podman("exec", "-e", "AGENTSHIM_INTENT=memory=300M", name, "bash", "-c", "-l",
               "echo run-tests; x=$(head -c 80000000 /dev/zero | tr '\\0' a); echo ${#x}")
    assert r.stdout.split() == ["run-tests", "80000000"], r.stderr
    # exit status and signals are plain bash's
    assert podman("exec", name, "bash", "-c", "exit 7", check=False).returncode == 7
    # not tool calls: the image's own bash, untouched, not in tools/
    r = podman("exec", "-i", name, "bash", "-s",
               input="echo $BASH_VERSION; cat /proc/self/cgroup")
    assert r.stdout.startswith("5.") and "/tools/" not in r.stdout
    records = paths.state_dir() / "calls" / f"{cid}.jsonl"
    recs = [json.loads(line) for line in records.read_text().splitlines()]
    assert [r["call"] for r in recs] == [1, 2, 3, 4]
    big = recs[2]
    assert big["category"] == "test" and big["grant_bytes"] == 300 << 20
    assert big["peak_bytes"] > 80_000_000 and big["exit"] == 0
    assert recs[3]["exit"] == 7


def test_no_daemon_means_fail_open_and_stop_leaves_nothing(hooks_dir):
    name = f"ashim-e2e-{uuid.uuid4().hex[:8]}"
    r = podman("--hooks-dir", str(hooks_dir), "run", "-d", "--name", name,
               "--annotation", "io.agentshim.enable=true", IMAGE, "sleep", "600")
    cid = r.stdout.strip()
    pid = int(podman("inspect", name, "--format", "{{.State.Pid}}").stdout)
    root = Cgroup.of_pid(detect_layout(), pid)
    container_cg = Cgroup(root.layout, {k: d.parent for k, d in root.dirs.items()})
    slot = json.loads((paths.state_dir() / "hooks" / f"{cid}.json").read_text())["slot"]
    sock = paths.slots_dir() / slot / "broker.sock"
    sock.unlink()  # the broker is gone
    r = podman("exec", name, "bash", "-c", "echo still works")
    assert r.stdout == "still works\n"
    assert "agentshim: running unmanaged" in r.stderr
    podman("rm", "-f", "-t", "0", name)
    time.sleep(0.5)
    left = [str(d) for d in container_cg.dirs.values() if d.exists()]
    assert left == [], f"cgroups left behind: {left}"
    assert not (paths.slots_dir() / slot).exists()
    assert (paths.state_dir() / "summaries" / f"{cid}.json").exists()


def test_bad_policy_refuses_the_container(hooks_dir):
    name = f"ashim-e2e-{uuid.uuid4().hex[:8]}"
    r = podman("--hooks-dir", str(hooks_dir), "run", "--rm", "--name", name,
               "--annotation", "io.agentshim.policy=memory: {total: lots}", IMAGE, "true",
               check=False)
    assert r.returncode != 0
    # podman 4.3 hides a precreate hook's stderr: the reason is logged for the operator
    last = (paths.state_dir() / "refusals.log").read_text().splitlines()[-1]
    assert "memory.total: bad size 'lots'" in last
    # through the runtime shim, podman shows the reason itself
    shim = Path(sys.executable).parent / "agentshim-runtime"
    r = podman("--runtime", str(shim), "run", "--rm", "--annotation",
               "io.agentshim.policy=memory: {total: lots}", IMAGE, "true", check=False)
    assert r.returncode != 0 and "memory.total: bad size 'lots'" in r.stderr


def test_call_stuck_at_its_budget_is_killed_alone_and_told(hooks_dir):
    name = f"ashim-e2e-{uuid.uuid4().hex[:8]}"
    policy = "memory:;  total: 1G;  tool_default: 64M;freeze_timeout: 1s"
    podman("--hooks-dir", str(hooks_dir), "run", "-d", "--name", name,
           "--annotation", f"io.agentshim.policy={policy}", IMAGE, "sleep", "600")
    try:
        t0 = time.monotonic()
        r = podman("exec", name, "bash", "-c",
                   "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}", check=False)
        took = time.monotonic() - t0
        assert r.returncode == 137, (r.returncode, r.stderr)
        assert "agentshim: call 1 (other) was killed" in r.stderr
        assert "64M" in r.stderr
        assert took < 20
        assert podman("exec", name, "bash", "-c", "echo alive").stdout == "alive\n"
        state = podman("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
        assert state == "running"
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
