"""Shared helpers of the real-podman tests (host tier with runc, VM tier with crun).

Each test module gets a private agentshim: hooks.d JSON pointing at this checkout with private
run/state directories (passed to the hooks, and so to the agentshimd the prestart hook starts),
and that daemon is stopped at the end. Podman containers are named with a prefix per test module
and always removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentshim.cgroups import Cgroup, detect_layout
from agentshim.protocol import request

REPO = Path(__file__).resolve().parent.parent
IMAGE = "localhost/agentshim-test:latest"
PY_IMAGE = "localhost/agentshim-test-py:latest"
BUILD_IMAGE = REPO / "tests" / "images" / "build-test-image.sh"
AGENTSHIM = Path(sys.executable).parent / "agentshim"
SHIM = Path(sys.executable).parent / "agentshim-runtime"
#: podman's (and so conmon's) working directory: on cgroup v1 conmon writes a file named "oom"
#: into it whenever anything below a container waits at a memory limit
PODMAN_CWD = Path(tempfile.gettempdir())


@dataclass
class Podman:
    """The podman command line to use (global options first: --root, --runtime, ...)."""

    base: list[str] = field(default_factory=lambda: ["podman"])

    def __call__(self, *args: str, check: bool = True, timeout: float = 180,
                 input: str | bytes | None = None, text: bool = True,
                 ) -> subprocess.CompletedProcess:
        """Run podman; with check=True a failure raises with podman's stderr in the message."""
        r = subprocess.run([*self.base, *args], capture_output=True, text=text, input=input,
                           timeout=timeout, cwd=PODMAN_CWD)
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def with_args(self, *extra: str) -> Podman:
        """The same podman with more global options."""
        return Podman([*self.base, *extra])


def build_images(podman: Podman, python: bool = False) -> None:
    """Build the test image(s) into podman's storage (cached: a no-op when present)."""
    env = dict(os.environ, PODMAN=" ".join(podman.base))
    subprocess.run([str(BUILD_IMAGE)], check=True, env=env, capture_output=True)
    if python:
        subprocess.run([str(BUILD_IMAGE), "--python"], check=True, env=env, capture_output=True)


def write_hooks_dir(dest: Path, env: dict[str, str]) -> Path:
    """hooks.d JSON of this checkout (hooks/*.json.in) whose hooks get `env`."""
    dest.mkdir(parents=True, exist_ok=True)
    for tmpl in (REPO / "hooks").glob("*.json.in"):
        spec = json.loads(tmpl.read_text().replace("@AGENTSHIM@", str(AGENTSHIM)))
        spec["hook"]["env"] = [f"{k}={v}" for k, v in env.items()] + [
            f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}"]
        (dest / tmpl.name.removesuffix(".in")).write_text(json.dumps(spec))
    return dest


@dataclass
class Agentshim:
    """A private agentshim for one test module: its hooks dir, directories and podman."""

    root: Path
    podman: Podman
    prefix: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def hooks_dir(self) -> Path:
        return self.root / "hooks.d"

    @property
    def run_dir(self) -> Path:
        return Path(self.env["AGENTSHIM_RUN_DIR"])

    @property
    def state_dir(self) -> Path:
        return Path(self.env["AGENTSHIM_STATE_DIR"])

    @property
    def hooked(self) -> Podman:
        """podman running agentshim's hooks (and only them)."""
        return self.podman.with_args("--hooks-dir", str(self.hooks_dir))

    def name(self) -> str:
        """A fresh container name with this module's prefix."""
        return f"{self.prefix}-{uuid.uuid4().hex[:8]}"

    def run_rm(self, cidfile: Path, *cmd: str,
               podman: Podman | None = None) -> tuple[str, subprocess.CompletedProcess]:
        """`podman run --rm` of a managed container (io.agentshim.enable=true) of the test image
        running cmd, to its end, with the hooked podman unless another is given; (the
        container's id, podman's result)."""
        r = (podman or self.hooked)("run", "--rm", "--cidfile", str(cidfile), "--name",
                                    self.name(), "--annotation", "io.agentshim.enable=true",
                                    IMAGE, *cmd)
        return cidfile.read_text().strip(), r

    def records(self, cid: str) -> list[dict[str, Any]]:
        """The call records of a container, in order."""
        path = self.state_dir / "calls" / f"{cid}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def status(self) -> dict[str, Any]:
        """agentshimd's reply to a status request on its control socket."""
        return request(self.run_dir / "agentshimd.sock", {"op": "status"})

    def hook_record(self, cid: str) -> dict[str, Any]:
        """What the prestart hook kept for poststop (slot, cgroup directories)."""
        return json.loads((self.state_dir / "hooks" / f"{cid}.json").read_text())

    def slot_dir(self, cid: str) -> Path:
        return self.run_dir / "slots" / self.hook_record(cid)["slot"]

    def daemon_pid(self) -> int | None:
        lock = self.run_dir / "agentshimd.lock"
        text = lock.read_text().strip() if lock.exists() else ""
        return int(text) if text.isdigit() else None

    def stop_daemon(self) -> None:
        pid = self.daemon_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def remove_containers(self) -> None:
        """Remove every container this module made (names start with its prefix)."""
        r = self.podman("ps", "-a", "--format", "{{.Names}}", check=False)
        for n in r.stdout.split():
            if n.startswith(self.prefix + "-"):
                self.podman("rm", "-f", "-t", "0", n, check=False)


def private_env(root: Path) -> dict[str, str]:
    """Environment of a private agentshim under root: its own run/state directories, and the
    checkout's wrapper (not an installed one another test may be moving)."""
    return {"AGENTSHIM_RUN_DIR": str(root / "run"), "AGENTSHIM_STATE_DIR": str(root / "state"),
            "AGENTSHIM_WRAPPER": str(REPO / "wrapper" / "agentshim-bash"),
            "AGENTSHIM_SWAP_POLICY": "bound"}  # budgets as without swap (daemon_support)


def _alive(pid: int) -> bool:
    """True while pid runs (a zombie child of ours is reaped and counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextlib.contextmanager
def private_agentshim(root: Path, podman: Podman, prefix: str,
                      extra_env: dict[str, str] | None = None) -> Iterator[Agentshim]:
    """Set up a private agentshim (os.environ points agentshim.paths at it while it lives),
    then remove its containers and stop its daemon. extra_env goes to the hooks (and so to
    the agentshimd they start), e.g. AGENTSHIM_BPF=0."""
    env = {**private_env(root), **(extra_env or {})}
    a = Agentshim(root=root, podman=podman, prefix=prefix, env=env)
    write_hooks_dir(a.hooks_dir, env)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield a
    finally:
        a.remove_containers()
        a.stop_daemon()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def need_podman() -> None:
    """Skip unless root with podman (packaging/setup-host.sh installs it)."""
    if os.geteuid() != 0 or shutil.which("podman") is None:
        pytest.skip("needs root and podman (run packaging/setup-host.sh)")


def build_wrapper() -> None:
    subprocess.run(["make", "-s", "-C", str(REPO / "wrapper")], check=True,
                   capture_output=True)


def agentshim_fixture(prefix: str, *, python: bool = False,
                      extra_env: dict[str, str] | None = None,
                      podman: Callable[[Path], Podman] = lambda root: Podman()) -> Any:
    """A module-scoped pytest fixture (assign it to `ash`) giving a private agentshim whose
    containers are named prefix-*: skips without root and podman, builds the wrapper and the
    test image (and the python one with python=True), makes the podman command line with
    podman(root of the private agentshim), then cleans up as private_agentshim does."""

    @pytest.fixture(scope="module")
    def ash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agentshim]:
        need_podman()
        build_wrapper()
        root = tmp_path_factory.mktemp("agentshim")
        pm = podman(root)
        build_images(pm, python=python)
        with private_agentshim(root, pm, prefix, extra_env) as a:
            yield a

    return ash


@dataclass
class Container:
    """A running container made by a test."""

    name: str
    id: str
    podman: Podman

    def pid(self) -> int:
        return int(self.podman("inspect", self.name, "--format", "{{.State.Pid}}").stdout)

    def exec(self, *cmd: str, check: bool = False, env: dict[str, str] | None = None,
             input: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        """podman exec (with -i when input is given)."""
        opts = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        if input is not None:
            opts.append("-i")
        return self.podman("exec", *opts, self.name, *cmd, check=check, input=input,
                           timeout=timeout)

    def rm(self) -> None:
        self.podman("rm", "-f", "-t", "0", self.name, check=False)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rm()


def run_container(podman: Podman, name: str, *args: str, image: str = IMAGE,
                  cmd: tuple[str, ...] = ("sleep", "600")) -> Container:
    """podman run -d (args are run options, e.g. annotations); fails the test if it fails.
    The container is removed by rm(), or at the end of a `with` block."""
    r = podman("run", "-d", "--name", name, *args, image, *cmd, check=False)
    if r.returncode != 0:
        podman("rm", "-f", "-t", "0", name, check=False)
        raise AssertionError(f"podman run {name} failed: {r.stderr}")
    return Container(name=name, id=r.stdout.strip(), podman=podman)


def cgroup_lines(text: str) -> dict[str, str]:
    """/proc/PID/cgroup text as {hierarchy: path}; the v2 line is keyed 'unified'."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":
            out["unified"] = parts[2]
        for c in parts[1].split(","):
            if c:
                out[c] = parts[2]
    return out


def assert_in_call(proc_cgroup: str, n: int) -> None:
    """Every hierarchy agentshim manages puts the process (/proc/PID/cgroup text) in
    tools/call-n."""
    lines = cgroup_lines(proc_cgroup)
    for h in managed_hierarchies():
        assert lines[h].endswith(f"/tools/call-{n}"), (h, proc_cgroup)


def assert_removed(cg: Cgroup) -> None:
    """No directory of cg is left in any hierarchy."""
    left = [str(d) for d in cg.dirs.values() if d.exists()]
    assert left == [], f"cgroups left behind: {left}"


def managed_hierarchies() -> list[str]:
    """The hierarchies agentshim's tree lives in on this host (memory/freezer/cpuacct and
    unified on a hybrid host; unified on v2)."""
    layout = detect_layout()
    return list(Cgroup.hierarchies(layout))


def container_cgroup(pid: int) -> Cgroup:
    """The container cgroup of a managed container's agent process (parent of framework/)."""
    cg = Cgroup.of_pid(detect_layout(), pid)
    if cg.name == "framework":
        return Cgroup(cg.layout, {k: d.parent for k, d in cg.dirs.items()})
    return cg


def call_dirs(root: Cgroup) -> list[Path]:
    """Every tools/call-* directory below a container cgroup, in every hierarchy."""
    return sorted(p for d in root.dirs.values() for p in (d / "tools").glob("call-*"))


def mounts_mentioning(*needles: str) -> list[str]:
    """Lines of the host's mount table that contain any of the needles."""
    text = Path("/proc/self/mountinfo").read_text()
    return [ln for ln in text.splitlines() if any(n in ln for n in needles)]
