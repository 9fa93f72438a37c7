"""Starting, watching and removing tenants: real podman containers under the host cgroup
(``--cgroup-parent``), or bare processes in <host>/tenant-N (``--no-podman``).

A tenant managed by agentshim gets its tree and registration the way a container does: podman
runs the replay's private hooks; a bare tenant is moved into tenant-N, its tree is built
(framework/, tools/) and it is registered with the replay's agentshimd over the control
socket, and its tool calls go through the static wrapper.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from agentshim import policy as pol
from agentshim.cgroups import Cgroup, CgroupError, ContainerTree, Layout, MemoryLimits, TreeBudget
from agentshim.replay.hostcg import HostCgroup
from agentshim.replay.schedule import Schedule
from agentshim.replay.service import PKG_PARENT, PrivateAgentshim
from agentshim.units import UNLIMITED

CONTAINER_PKG = "/opt/agentshim"


class LaunchError(RuntimeError):
    """A tenant could not be started; the message says which and why."""


@dataclass
class TenantSpec:
    """What one tenant runs and under which limits."""

    index: int
    cid: str  # container name / agentshimd id
    schedule: Schedule
    out: Path  # host directory: schedule.json, tenant.jsonl, lat/, go
    static_limit: int | None = None
    policy_yaml: str | None = None  # managed by agentshim when set
    retries: int = 2  # re-runs of a killed tool call

    @property
    def go(self) -> Path:
        """The file whose creation starts the tenant."""
        return self.out / "go"


def _status(code: int) -> int:
    """A subprocess return code as a shell would show it (signal N -> 128 + N)."""
    return 128 - code if code < 0 else code


class Tenant:
    """A started tenant (base of the two kinds)."""

    def __init__(self, spec: TenantSpec, host: HostCgroup) -> None:
        self.spec = spec
        self.host = host
        self.index = spec.index
        self.exit_code: int | None = None
        self.cgroup: Cgroup | None = None

    def container(self) -> Cgroup | None:
        """The tenant's container cgroup (the direct child of the host cgroup)."""
        return self.cgroup

    def running(self) -> bool:
        """True until the tenant's process has exited."""
        return self.poll() is None

    def poll(self) -> int | None:
        """Exit status once it exited, else None."""
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL everything in the container."""
        cg = self.container()
        if cg is not None:
            with contextlib.suppress(CgroupError):
                cg.kill()

    def cleanup(self) -> None:
        """Remove the tenant (container, cgroups); idempotent."""
        raise NotImplementedError


class BareTenant(Tenant):
    """A tenant process in <host>/tenant-N."""

    def __init__(self, spec: TenantSpec, host: HostCgroup, layout: Layout,
                 service: PrivateAgentshim | None) -> None:
        super().__init__(spec, host)
        self.layout = layout
        self.service = service if spec.policy_yaml is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.registered = False

    def start(self) -> None:
        """Create tenant-N, start the tenant in it, build/register when managed."""
        spec = self.spec
        cg = self.host.tenant(spec.index)
        cg.create()
        self.cgroup = cg
        if spec.static_limit is not None:
            cg.set_memory(MemoryLimits(max=spec.static_limit))
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PKG_PARENT), os.environ.get("PYTHONPATH", "")) if p)
        bash = "/bin/bash"
        if self.service is not None:
            assert self.service.wrapper is not None
            env["AGENTSHIM_SOCKET"] = str(self.service.run_dir / "slots" / spec.cid /
                                          "broker.sock")
            env["AGENTSHIM_REAL_BASH"] = "/bin/bash"
            bash = str(self.service.wrapper)
        with open(spec.out / "tenant.err", "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agentshim.replay.tenant", "--schedule",
                 str(spec.out / "schedule.json"), "--out", str(spec.out), "--go", str(spec.go),
                 "--bash", bash, "--python", sys.executable, "--retries", str(spec.retries)],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        try:
            cg.move(self.proc.pid)
            if self.service is not None:
                self._manage(cg)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def _manage(self, cg: Cgroup) -> None:
        assert self.service is not None and self.proc is not None
        assert self.spec.policy_yaml is not None
        policy = pol.load_policy(self.spec.policy_yaml)

        def opt(x: int) -> int | None:
            return None if x >= UNLIMITED else x

        m = policy.memory
        ContainerTree(cg).build(TreeBudget(total=opt(m.total),
                                           framework_low=opt(m.framework_protect),
                                           tools_high=opt(m.tools)))
        self.service.register(self.spec.cid, self.spec.cid, self.proc.pid, cg,
                              self.spec.policy_yaml)
        self.registered = True

    def poll(self) -> int | None:
        if self.proc is None:
            return self.exit_code
        code = self.proc.poll()
        if code is not None:
            self.exit_code = _status(code)
        return self.exit_code

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.poll()
        if self.registered and self.service is not None:
            self.service.unregister(self.spec.cid)
            self.registered = False
        if self.cgroup is not None:
            with contextlib.suppress(CgroupError):
                ContainerTree(self.cgroup).destroy(kill_calls=True)
            with contextlib.suppress(CgroupError):
                self.cgroup.remove_tree(kill=True)


class PodmanTenant(Tenant):
    """A tenant container: `podman run` under the host cgroup, the agentshim package mounted
    read-only, the tenant's directory at /replay."""

    def __init__(self, spec: TenantSpec, host: HostCgroup, layout: Layout, image: str,
                 service: PrivateAgentshim | None) -> None:
        super().__init__(spec, host)
        self.layout = layout
        self.image = image
        self.service = service
        self.cid = ""
        self._waiter: threading.Thread | None = None
        self.removed = False

    def podman(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run podman (with the replay's hooks directory when there is one)."""
        pre = ["--hooks-dir", str(self.service.hooks_dir)] if self.service else []
        # cwd: conmon inherits it and, on cgroup v1, writes a file named "oom" there whenever
        # anything below the container waits at a limit (a tool call at its budget)
        return subprocess.run(["podman", *pre, *args], capture_output=True, text=True,
                              check=False, timeout=timeout, cwd=self.spec.out)

    def start(self) -> None:
        """podman run -d; the tenant waits for /replay/go."""
        spec = self.spec
        args = ["run", "-d", "--name", spec.cid, "--cgroup-parent", "/" + self.host.rel,
                "--network", "none", "--pids-limit", "4096",
                "-v", f"{PKG_PARENT / 'agentshim'}:{CONTAINER_PKG}/agentshim:ro",
                "-v", f"{spec.out}:/replay", "-e", f"PYTHONPATH={CONTAINER_PKG}",
                "-e", "PYTHONDONTWRITEBYTECODE=1"]
        if spec.static_limit is not None:
            args += ["--memory", str(spec.static_limit)]
        if spec.policy_yaml is not None:
            value = base64.b64encode(spec.policy_yaml.encode()).decode()
            args += ["--annotation", f"{pol.ANNOTATION_POLICY}=base64:{value}"]
        args += [self.image, "python3", "-m", "agentshim.replay.tenant",
                 "--schedule", "/replay/schedule.json", "--out", "/replay",
                 "--go", "/replay/go", "--retries", str(spec.retries)]
        r = self.podman(*args)
        if r.returncode != 0:
            self.podman("rm", "-f", "-t", "0", spec.cid)
            raise LaunchError(f"podman run {spec.cid} failed: {r.stderr.strip()[-600:]}")
        self.cid = r.stdout.strip().splitlines()[-1]
        self.cgroup = Cgroup.at(self.layout, f"{self.host.rel}/libpod-{self.cid}")
        if not self.cgroup.exists():
            raise LaunchError(f"{spec.cid}: its cgroup is not at {self.cgroup.primary} "
                              "(podman's cgroup manager must be cgroupfs)")
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        r = self.podman("wait", self.spec.cid, timeout=24 * 3600)
        try:
            self.exit_code = int(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.exit_code = 255

    def poll(self) -> int | None:
        return self.exit_code

    def logs(self) -> str:
        """The container's output (its stderr holds a tenant's traceback)."""
        return self.podman("logs", self.spec.cid).stderr[-2000:]

    def cleanup(self) -> None:
        if self.removed:
            return
        self.podman("rm", "-f", "-t", "0", self.spec.cid)
        if self._waiter is not None:
            self._waiter.join(timeout=30)
        if self.exit_code is None:
            self.exit_code = 137
        self.removed = True
