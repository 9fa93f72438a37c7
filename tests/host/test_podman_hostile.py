"""Images whose bash path is hostile never get a host file mounted into the container.

Each case is a real image (the test image's rootfs, changed, then `podman import`ed) run with
real podman and agentshim's hooks. The worst one is issue 15's: /usr/bin/bash is a symlink into
a directory a volume covers, and in the volume `bash` is a host symlink to a host secret. In
every case the container must not be able to read the secret at /run/agentshim/bash.real (or
anywhere agentshim mounts), the container must still run, and removing it leaves nothing of
agentshim's behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.podman_support import BUILD_IMAGE, agentshim_fixture

ash = agentshim_fixture("ash-hostile")
MARK = b"agentshim-host-secret-" + uuid.uuid4().hex.encode()


@pytest.fixture(scope="module")
def base_rootfs(ash, tmp_path_factory) -> Path:
    """The test image's rootfs as a tarball (no podman)."""
    tar = tmp_path_factory.mktemp("rootfs") / "rootfs.tar"
    subprocess.run([str(BUILD_IMAGE), "--tar", str(tar)], check=True, capture_output=True)
    return tar


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("host") / "secret"
    p.write_bytes(MARK + b"\n")
    os.chmod(p, 0o600)
    return p


def make_image(ash, base: Path, tmp: Path, change: Callable[[Path], None]) -> str:
    """Import base with change(rootfs) applied; returns the image name (removed by the test)."""
    root = tmp / "rootfs"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xf", str(base)], check=True)
    change(root)
    name = f"localhost/ash-hostile-{uuid.uuid4().hex[:8]}:latest"
    tar = subprocess.run(["tar", "-C", str(root), "-c", "."], check=True, capture_output=True)
    ash.podman("import", "-q", "-", name, input=tar.stdout, text=False)
    return name


def _replace_bash(root: Path, target: str) -> None:
    bash = root / "usr" / "bin" / "bash"
    bash.unlink()
    bash.symlink_to(target)


def into_volume(secret: Path) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / "data").mkdir()
        shutil.copy2(root / "usr" / "bin" / "bash", root / "data" / "bash")
        _replace_bash(root, "/data/bash")
    return change


def fifo(root: Path) -> None:
    bash = root / "usr" / "bin" / "bash"
    bash.unlink()
    os.mkfifo(bash)


CASES: dict[str, Callable[[Path], None]] = {
    "proc": lambda root: _replace_bash(root, "/proc/1/root/etc/shadow"),
    "loop": lambda root: _replace_bash(root, "/usr/bin/bash"),
    "fifo": fifo,
    "long-name": lambda root: _replace_bash(root, "/" + "x" * 300),
}


def leftovers(ash) -> set[str]:
    """Slot directories, plans, records and slot claims of agentshim's hooks."""
    found: set[str] = set()
    for d in (ash.run_dir / "slots", ash.state_dir / "hooks", ash.state_dir / "hooks" / "claims"):
        if d.exists():
            found |= {str(p) for p in d.iterdir() if p.name != "claims"}
    return found


def run_reader(ash, image: str, *volume: str) -> subprocess.CompletedProcess:
    """Run the image's busybox to print whatever agentshim mounted at the side path."""
    name = ash.name()
    try:
        return ash.hooked("run", "--rm", "--name", name, "--annotation",
                          "io.agentshim.enable=true", *volume, image, "/bin/busybox", "sh",
                          "-c", "/bin/busybox cat /run/agentshim/bash.real; echo RAN",
                          check=False, text=False)
    finally:
        ash.podman("rm", "-f", "-t", "0", name, check=False)


def run_changed_image(ash, base: Path, tmp: Path, change: Callable[[Path], None],
                      *volume: str) -> subprocess.CompletedProcess:
    """run_reader on the test image changed by change(rootfs); the image is removed after."""
    image = make_image(ash, base, tmp, change)
    try:
        return run_reader(ash, image, *volume)
    finally:
        ash.podman("rmi", "-f", image, check=False)


def test_a_symlink_into_a_volume_does_not_mount_the_host_file(ash, base_rootfs, secret,
                                                            tmp_path):
    vol = tmp_path / "volume"
    vol.mkdir()
    (vol / "bash").symlink_to(secret)  # a host symlink, as a cloned repository could hold
    before = leftovers(ash)
    r = run_changed_image(ash, base_rootfs, tmp_path, into_volume(secret), "-v", f"{vol}:/data")
    assert b"RAN" in r.stdout, r.stderr
    assert MARK not in r.stdout and MARK not in r.stderr
    assert leftovers(ash) == before


def test_the_side_path_holds_a_copy_of_the_image_bash_not_a_rootfs_path(ash, base_rootfs,
                                                                         tmp_path):
    r = run_changed_image(ash, base_rootfs, tmp_path, lambda root: None)
    assert r.returncode == 0, r.stderr
    store = ash.state_dir / "bash"
    copies = list(store.iterdir())
    assert copies and all(c.stat().st_uid == 0 for c in copies)
    assert any(r.stdout.startswith(c.read_bytes()) for c in copies)


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_bash_paths_run_unmanaged_and_leave_nothing(ash, base_rootfs, secret, tmp_path,
                                                            case):
    before = leftovers(ash)
    r = run_changed_image(ash, base_rootfs, tmp_path, CASES[case])
    assert b"RAN" in r.stdout, r.stderr
    assert MARK not in r.stdout
    assert b"Traceback" not in r.stderr
    assert leftovers(ash) == before


def test_dotdot_escape_resolves_inside_the_rootfs(ash, base_rootfs, secret, tmp_path):
    r = run_changed_image(ash, base_rootfs, tmp_path,
                          lambda root: _replace_bash(root, "../../" * 8 + str(secret).lstrip("/")))
    assert b"RAN" in r.stdout, r.stderr
    assert MARK not in r.stdout
