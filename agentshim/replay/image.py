"""The replay's container image, built offline from this host's files (no registry needed):
the host's Python 3 (interpreter, standard library, the shared libraries they link), bash
(the image's own shell: agentshim's wrapper goes over it) and busybox when present.

agentshim's code is not in the image: the replay bind-mounts the running agentshim package
read-only, so the tenant and its allocator are always the replay's own version.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

REPO_NAME = "localhost/agentshim-replay"
PYTHON = Path("/usr/bin/python3")
SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
             "dist-packages", "site-packages", "config-3.11-x86_64-linux-gnu"}
BUSYBOX_TOOLS = ("sh", "ls", "cat", "echo", "sleep", "ps", "head", "tail", "grep", "env", "id",
                 "mkdir", "rm", "true", "false", "kill")


class ImageError(RuntimeError):
    """The image could not be built; the message names the step."""


def _run(cmd: list[str], **kw: object) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore
    if r.returncode != 0:
        raise ImageError(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout).strip()[-400:]}")
    return r.stdout


def python_info(python: Path = PYTHON) -> tuple[str, Path, Path]:
    """(version X.Y.Z, stdlib dir, real interpreter path) of the host's python3."""
    out = _run([str(python), "-c", "import sys, sysconfig, os; print(sys.version.split()[0]); "
                "print(sysconfig.get_paths()['stdlib']); print(os.path.realpath(sys.executable))"])
    version, stdlib, exe = out.split("\n")[:3]
    return version, Path(stdlib), Path(exe)


def image_name(python: Path = PYTHON) -> str:
    """The image's name, tagged with the Python version it carries."""
    return f"{REPO_NAME}:py{python_info(python)[0]}"


def libraries(binaries: Iterable[Path]) -> set[Path]:
    """Shared libraries (and the loader) the binaries need, from ldd."""
    out: set[Path] = set()
    for b in binaries:
        r = subprocess.run(["ldd", str(b)], capture_output=True, text=True, check=False)
        for path in re.findall(r"(/\S+)", r.stdout):
            out.add(Path(path))
    return out


def _copy(src: Path, root: Path) -> None:
    dst = root / str(src).lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst, follow_symlinks=True)


def build_rootfs(root: Path, python: Path = PYTHON) -> None:
    """Assemble the image's files under root."""
    version, stdlib, exe = python_info(python)
    for d in ("usr/bin", "usr/lib", "tmp", "proc", "sys", "dev", "etc", "root", "replay"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib")):
        (root / name).symlink_to(target)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(exe, root / "usr/bin/python3")
    dest = root / str(stdlib).lstrip("/")

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in SKIP_DIRS}
        skipped |= {n for n in names if (Path(directory) / n).is_symlink()
                    and not (Path(directory) / n).exists()}
        return skipped

    shutil.copytree(stdlib, dest, ignore=ignore, symlinks=False)
    binaries = [exe, Path("/usr/bin/bash"), *sorted((stdlib / "lib-dynload").glob("*.so"))]
    for lib in libraries(binaries):
        if lib.exists():
            _copy(lib, root)
    shutil.copy2("/usr/bin/bash", root / "usr/bin/bash")
    busybox = shutil.which("busybox")
    if busybox:
        shutil.copy2(busybox, root / "usr/bin/busybox")
        for tool in BUSYBOX_TOOLS:
            (root / "usr/bin" / tool).symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/agentshim-replay-image").write_text(f"python {version}\n")


def exists(name: str) -> bool:
    """True when podman has the image."""
    return subprocess.run(["podman", "image", "exists", name], capture_output=True,
                          check=False).returncode == 0


def ensure_image(progress: Callable[[str], None] = print, force: bool = False,
                 python: Path = PYTHON) -> str:
    """The replay image's name, built first when podman does not have it (or force)."""
    if shutil.which("podman") is None:
        raise ImageError("podman is not installed (run packaging/setup-host.sh, or use "
                         "--no-podman)")
    if not python.exists():
        raise ImageError(f"{python} is missing: the replay image is made from the host's "
                         "Python 3")
    name = image_name(python)
    if not force and exists(name):
        return name
    progress(f"building the replay image {name} from this host's python3 and bash ...")
    with tempfile.TemporaryDirectory(prefix="agentshim-image-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        progress("  copying python3, its standard library and shared libraries")
        build_rootfs(root, python)
        progress("  importing into podman")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run(["podman", "import", "-q", "-", name], stdin=tar.stdout)
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            tar.wait()
    progress(f"  built {name}")
    return name


def warm_up(name: str) -> None:
    """Start Python in the image once, so the first policy does not pay for a cold cache."""
    subprocess.run(["podman", "run", "--rm", "--network", "none", name, "python3", "-c",
                    "import json, mmap, subprocess, threading"], capture_output=True,
                   check=False, timeout=120)


def main() -> int:
    """`python -m agentshim.replay.image [--force]`: build the image."""
    try:
        print(ensure_image(force="--force" in sys.argv[1:]))
    except ImageError as e:
        print(f"agentshim replay image: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
