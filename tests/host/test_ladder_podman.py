"""The ladder with real podman containers: two tenants at different priorities share a parent
cgroup with a memory limit (podman --cgroup-parent); the low-priority tenant's tool call is
frozen when the host nears its limit, the high-priority one completes, the low one resumes and
its wrapper tells the agent on stderr what happened; the agent processes live on."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from agentshim.cgroups import MemoryLimits, detect_layout
from agentshim.units import MIB
from tests.conftest import make_test_cgroup, remove_when_released
from tests.daemon_support import wait_for
from tests.podman_support import (
    PODMAN_CWD,
    PY_IMAGE,
    Container,
    agentshim_fixture,
    run_container,
)

HOST_MB = 800
POLICY = ("priority: {p};memory:;  total: 2G;  tool_default: 1G;freeze_timeout: 60s;"
          "admission_timeout: 0s")  # the ladder on running calls (admission: test_admission)
ALLOC = ("import sys, time\n"
         "mb, step, pause = int(sys.argv[1]), 10, float(sys.argv[2])\n"
         "chunks = []\n"
         "for i in range(mb // step):\n"
         "    chunks.append(b'Z' * (step << 20))\n"
         "    print('allocated', (i + 1) * step, flush=True)\n"
         "    time.sleep(pause)\n"
         "print('done', flush=True)\n"
         "sys.stdin.read(1) if sys.argv[3] == 'hold' else None\n")


ash = agentshim_fixture("ashim-ladder", python=True,
                       extra_env={"AGENTSHIM_BPF": "0", "AGENTSHIM_OFFLOAD": "0"})


@pytest.fixture
def host():
    """The shared parent cgroup with an 800M limit, removed afterwards."""
    cg = make_test_cgroup(detect_layout(), f"ladder-{uuid.uuid4().hex[:8]}")
    cg.set_memory(MemoryLimits(max=HOST_MB * MIB))
    cg.enable_controllers()  # for the containers below it (v2; nothing to do on hybrid)
    yield cg
    # podman's conmon (in <parent>/conmon) lingers as a zombie until init reaps it
    remove_when_released(cg)


def actions(ash, cid: str) -> list[tuple[str, int | None]]:
    path = ash.state_dir / "events" / f"{cid}.jsonl"
    if not path.exists():
        return []
    import json
    return [(e["action"], e["call"]) for e in map(json.loads, path.read_text().splitlines())
            if e["action"] in ("freeze", "thaw", "kill")]


def exec_alloc(c, mb: int, pause: float, mode: str) -> subprocess.Popen:
    """podman exec -i NAME bash -c 'python3 -c ALLOC ...', running in the background."""
    script = f"python3 -c \"$ALLOC\" {mb} {pause} {mode}"
    return subprocess.Popen([*c.podman.base, "exec", "-i", "-e", f"ALLOC={ALLOC}", c.name,
                             "bash", "-c", script], stdin=subprocess.PIPE, cwd=PODMAN_CWD,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tenant(ash, parent: str, priority: str) -> Container:
    """A managed container of the python image with this priority, below cgroup `parent`."""
    return run_container(ash.hooked, ash.name(), "--cgroup-parent", parent, "--annotation",
                         f"io.agentshim.policy={POLICY.format(p=priority)}", image=PY_IMAGE)


def test_low_priority_tenant_is_frozen_first_and_told(ash, host):
    parent = "/" + str(host.primary.relative_to(host.layout.v1["memory"]
                                                 if host.layout.mode != "v2"
                                                 else host.layout.unified))
    with tenant(ash, parent, "low") as low, tenant(ash, parent, "high") as high:
        h = exec_alloc(high, 300, 0.0, "hold")
        assert h.stdout is not None
        while not h.stdout.readline().startswith("done"):
            assert h.poll() is None, h.stderr.read() if h.stderr else ""
        lo = exec_alloc(low, 560, 0.04, "exit")
        wait_for(lambda: any(a == "freeze" for a, _ in actions(ash, low.id)),
                 timeout_s=60, what="the low-priority call frozen")
        assert actions(ash, high.id) == []
        assert lo.poll() is None
        out, err = h.communicate("x", timeout=60)  # the high-priority call completes
        assert h.returncode == 0, err
        out, err = lo.communicate(timeout=120)  # thawed once the host has room again
        assert lo.returncode == 0, err
        assert out.splitlines()[-1] == "done"
        assert ("thaw", 1) in actions(ash, low.id)
        notice = [x for x in err.splitlines() if x.startswith("agentshim: call 1")]
        assert notice and "was frozen" in notice[0] and "host at" in notice[0], err
        for c in (low, high):  # the agents live on and still answer
            r = c.exec("bash", "-c", "echo alive")
            assert r.stdout == "alive\n"
