"""Podman on pure cgroup v2 with crun (runs inside the virtme-ng VM): the hooks, agentshimd, the
wrapper and agentshim-runtime, for real.

Podman here is private to the tests: --root/--runroot under /tmp with the vfs driver (the VM's
root is a copy-on-write view of the host), --cgroup-manager cgroupfs, --runtime crun, file
events, agentshim's hooks from a private --hooks-dir. The test image is built into that storage
from host files. agentshimd runs without BPF here (AGENTSHIM_BPF=0: compiling it under software
emulation takes long; the BPF tests cover it) and the wrapper waits up to 30 s for it.

What v2 changes (docs/podman.md): the container cgroup may hold no process once framework/ and
tools/ have controllers enabled, and `podman exec` still works because crun (and runc) put an
exec'd process into the cgroup of the container's init process, which is framework/.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from agentshim.cgroups import Cgroup, detect_layout
from agentshim.protocol import request
from agentshim.units import MIB
from tests.podman_support import (
    SHIM,
    Podman,
    build_images,
    build_wrapper,
    call_dirs,
    container_cgroup,
    mounts_mentioning,
    need_podman,
    private_agentshim,
    run_container,
)

pytestmark = pytest.mark.v2
SLOW = ["-e", "AGENTSHIM_TIMEOUT_MS=30000", "--network", "none"]
POLICY = ("memory:;  total: 1G;  framework_protect: 64M;  tool_default: 512M;"
          "categories:;  file_ops:;    memory: 128M")


@pytest.fixture(scope="module")
def ash(tmp_path_factory):
    need_podman()
    if detect_layout().mode != "v2":
        pytest.skip("cgroups are not pure v2 here; this runs in the VM tier (make test-vm)")
    if shutil.which("crun") is None:
        pytest.skip("crun missing (packaging/setup-host.sh installs it)")
    base = tmp_path_factory.mktemp("podman")
    podman = Podman(["podman", "--root", str(base / "root"), "--runroot", str(base / "runroot"),
                     "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
                     "--runtime", "crun", "--events-backend", "file"])
    build_wrapper()
    build_images(podman)
    with private_agentshim(tmp_path_factory.mktemp("agentshim"), podman, "ashim-v2",
                           extra_env={"AGENTSHIM_BPF": "0"}) as a:
        yield a
    podman("system", "reset", "--force", check=False, timeout=300)


def inside(c, *cmd: str) -> str:
    r = c.exec(*cmd)
    assert r.returncode == 0 and r.stderr == "", (cmd, r.returncode, r.stderr)
    return r.stdout


def test_calls_exec_and_teardown_on_v2_with_crun(ash):
    c = run_container(ash.hooked, ash.name(), *SLOW, "--shm-size", "512m", "--annotation",
                      f"io.agentshim.policy={POLICY}")
    layout = detect_layout()
    pid = c.pid()
    assert Cgroup.of_pid(layout, pid).name == "framework"
    root = container_cgroup(pid)
    # the v2 tree: controllers on for the children, the container cgroup itself empty
    assert "memory" in root.read("unified", "cgroup.subtree_control").split()
    assert root.read("memory", "memory.max").strip() == str(1 << 30)
    assert root.procs() == []
    # cgroup namespace: the container sees its own cgroup as /
    assert inside(c, "cat", "/proc/1/cgroup") == "0::/framework\n"
    forms = [["bash", "-c"], ["bash", "-lc"], ["bash", "-c", "-l"], ["bash", "--login", "-c"]]
    script = ("cat /proc/self/cgroup; "
              "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.high")
    for n, form in enumerate(forms, start=1):
        out = inside(c, *form, script).split()
        assert out == [f"0::/tools/call-{n}", str(128 * MIB)], (form, out)
    # podman exec of a program that is not bash: crun puts it into init's cgroup, framework/
    assert inside(c, "cat", "/proc/self/cgroup") == "0::/framework\n"
    out = inside(c, "sh", "-c", "bash -c 'cat /proc/self/cgroup'; cat /proc/self/cgroup")
    assert out.split() == ["0::/tools/call-5", "0::/framework"]
    c.podman("exec", "-d", c.name, "sleep", "300")
    time.sleep(0.5)
    assert len(root.child("framework").procs()) == 2 and root.procs() == []
    # a call allocating 300 MiB (tmpfs pages are charged to the writer's cgroup, exactly)
    r = c.exec("bash", "-c", "dd if=/dev/zero of=/dev/shm/x bs=1M count=300 2>/dev/null; "
               "rm /dev/shm/x", env={"AGENTSHIM_INTENT": "memory=600M"})
    assert r.returncode == 0, r.stderr
    recs = ash.records(c.id)
    assert [x["call"] for x in recs] == [1, 2, 3, 4, 5, 6]
    assert all(x["end"] == "reported" and x["exit"] == 0 for x in recs)
    peak = recs[-1]["peak_bytes"]
    assert abs(peak - 300 * MIB) <= 30 * MIB, f"peak {peak / MIB:.1f} MiB for 300 MiB"
    assert call_dirs(root) == []
    slot = ash.slot_dir(c.id)
    c.rm()
    left = [str(d) for d in root.dirs.values() if d.exists()]
    assert left == [], f"cgroups left behind: {left}"
    assert not slot.exists() and mounts_mentioning(str(slot), c.id) == []
    assert not (ash.state_dir / "hooks" / f"{c.id}.json").exists()
    status = request(ash.run_dir / "agentshimd.sock", {"op": "status"})
    assert c.id not in [x["id"] for x in status["containers"]]


def test_unannotated_container_is_untouched_on_v2(ash):
    c = run_container(ash.hooked, ash.name(), *SLOW)
    try:
        cg = Cgroup.of_pid(detect_layout(), c.pid())
        assert cg.name.startswith("libpod-") and cg.children() == []
        assert inside(c, "bash", "-c", "cat /proc/self/cgroup") == "0::/\n"
        assert "/run/agentshim" not in inside(c, "cat", "/proc/self/mountinfo")
        assert ash.records(c.id) == []
    finally:
        c.rm()


def test_runtime_shim_alone_on_v2(ash, tmp_path):
    shim = tmp_path / "agentshim-runtime"
    env = {**ash.env, "AGENTSHIM_RUNTIME": shutil.which("crun") or "crun",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    shim.write_text("#!/bin/sh\n" + "".join(f"export {k}='{v}'\n" for k, v in env.items())
                    + f"exec {SHIM} \"$@\"\n")
    shim.chmod(0o755)
    (tmp_path / "no-hooks").mkdir()
    podman = ash.podman.with_args("--runtime", str(shim),
                                  "--hooks-dir", str(tmp_path / "no-hooks"))
    c = run_container(podman, ash.name(), *SLOW, "--annotation", "io.agentshim.enable=true")
    root = container_cgroup(c.pid())
    assert Cgroup.of_pid(detect_layout(), c.pid()).name == "framework"
    assert inside(c, "bash", "-c", "cat /proc/self/cgroup") == "0::/tools/call-1\n"
    slot = ash.slot_dir(c.id)
    c.rm()
    assert not any(d.exists() for d in root.dirs.values())
    assert not slot.exists()
    assert (ash.state_dir / "summaries" / f"{c.id}.json").exists()
