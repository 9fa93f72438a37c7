"""OCI hooks: precreate (config.json edits), prestart (tree + registration), poststop (teardown).

The precreate edits are one function, `edit_config`, shared with agentshim-runtime.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from agentshim import paths
from agentshim import policy as pol
from agentshim.cgroups import Cgroup, CgroupError, ContainerTree, TreeBudget, detect_layout
from agentshim.protocol import DaemonUnavailable, request
from agentshim.units import UNLIMITED

ANNOTATION_SLOT = "io.agentshim.slot"
BASH_PATHS = ("/bin/bash", "/usr/bin/bash")


class HookError(Exception):
    """A hook refuses the container; the message is shown by podman."""


def resolve_in_rootfs(rootfs: Path, path: str, max_links: int = 40) -> str | None:
    """Resolve `path` as the container would see it (symlinks relative to rootfs).
    Returns the container path of the final regular file, or None."""
    parts = list(PurePosixPath(path).parts[1:])
    cur = PurePosixPath("/")
    links = 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            cur = cur.parent
            continue
        nxt = cur / name
        host = rootfs / str(nxt).lstrip("/")
        if host.is_symlink():
            links += 1
            if links > max_links:
                return None
            target = PurePosixPath(os.readlink(host))
            if target.is_absolute():
                cur = PurePosixPath("/")
                parts = list(target.parts[1:]) + parts
            else:
                parts = list(target.parts) + parts
            continue
        cur = nxt
    host = rootfs / str(cur).lstrip("/")
    return str(cur) if host.is_file() else None


def refusals_log() -> Path:
    """Where refusals are logged: podman 4.x does not show a precreate hook's stderr."""
    return paths.state_dir() / "refusals.log"


def policy_of(annotations: dict[str, str]) -> pol.Policy | None:
    """The container's policy from its annotations (None: not managed). Raises HookError,
    after appending the reason to refusals_log()."""
    try:
        return pol.policy_from_annotations(annotations, paths.profiles_dir())
    except pol.PolicyInvalid as e:
        msg = f"agentshim: container refused: {e}"
        with contextlib.suppress(OSError):
            refusals_log().parent.mkdir(parents=True, exist_ok=True)
            with refusals_log().open("a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {msg}\n")
        raise HookError(msg) from e


def edit_config(config: dict[str, Any], bundle: Path | None = None) -> dict[str, Any]:
    """The precreate edits: wrapper over the image's bash, the real bash at a side path, the
    per-container broker directory mounted at /run/agentshim. Unmanaged containers are
    returned untouched. Raises HookError for a bad policy."""
    annotations = config.get("annotations") or {}
    if policy_of(annotations) is None:
        return config
    root = Path((config.get("root") or {}).get("path", "rootfs"))
    if not root.is_absolute():
        root = (bundle or Path.cwd()) / root
    slot = annotations.get(ANNOTATION_SLOT) or secrets.token_hex(8)
    slot_dir = paths.slots_dir() / slot
    slot_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    mounts = config.setdefault("mounts", [])
    mounts.append({"destination": paths.CONTAINER_RUN_DIR, "type": "bind",
                   "source": str(slot_dir), "options": ["bind", "rw", "nosuid", "nodev"]})
    targets = sorted({t for p in BASH_PATHS if (t := resolve_in_rootfs(root, p))})
    wrapper = paths.wrapper_binary()
    if targets and wrapper.exists():
        (slot_dir / "bash.real").touch()
        mounts.append({"destination": paths.CONTAINER_REAL_BASH, "type": "bind",
                       "source": str(root / targets[0].lstrip("/")), "options": ["bind", "ro"]})
        for t in targets:
            mounts.append({"destination": t, "type": "bind", "source": str(wrapper),
                           "options": ["bind", "ro"]})
    elif not wrapper.exists():
        print(f"agentshim: wrapper {wrapper} missing; tool calls will not be managed",
              file=sys.stderr)
    env = config.setdefault("process", {}).setdefault("env", [])
    env[:] = [e for e in env if not e.startswith(("AGENTSHIM_SOCKET=", "AGENTSHIM_REAL_BASH="))]
    env += [f"AGENTSHIM_SOCKET={paths.CONTAINER_SOCKET}",
            f"AGENTSHIM_REAL_BASH={paths.CONTAINER_REAL_BASH}"]
    config.setdefault("annotations", {})[ANNOTATION_SLOT] = slot
    return config


def _opt(x: int) -> int | None:
    return None if x >= UNLIMITED else x


def ensure_daemon(timeout_s: float = 5.0) -> None:
    """Start agentshimd detached when its control socket does not answer."""
    with contextlib.suppress(DaemonUnavailable):
        request(paths.control_socket(), {"op": "status"}, timeout_s=1.0)
        return
    log_dir = paths.state_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "agentshimd.log", "ab") as logf:
        subprocess.Popen([sys.executable, "-m", "agentshim.daemon"], stdin=subprocess.DEVNULL,
                         stdout=logf, stderr=logf, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            request(paths.control_socket(), {"op": "status"}, timeout_s=1.0)
            return
        except DaemonUnavailable:
            time.sleep(0.05)
    raise DaemonUnavailable(f"agentshimd did not start within {timeout_s} s "
                            f"(see {log_dir / 'agentshimd.log'})")


def _record_path(cid: str) -> Path:
    return paths.state_dir() / "hooks" / f"{cid}.json"


def prestart(state: dict[str, Any]) -> str:
    """Build the tree, move the container into framework/, register with agentshimd.
    Returns a one-line status; a daemon that cannot be reached is a warning (fail-open)."""
    annotations = state.get("annotations") or {}
    policy = policy_of(annotations)
    if policy is None:
        return "not managed"
    cid, pid = str(state["id"]), int(state["pid"])
    slot = annotations.get(ANNOTATION_SLOT)
    if not slot:
        raise HookError("agentshim: no io.agentshim.slot annotation (precreate hook or "
                        "agentshim-runtime did not run)")
    layout = detect_layout()
    root = Cgroup.of_pid(layout, pid)
    tree = ContainerTree(root)
    m = policy.memory
    try:
        tree.build(TreeBudget(total=_opt(m.total), framework_low=_opt(m.framework_protect),
                              tools_high=_opt(m.tools)))
    except CgroupError as e:
        raise HookError(f"agentshim: cannot build the cgroup tree: {e}") from e
    rec = _record_path(cid)
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text(json.dumps({"slot": slot, "cgroup": {k: str(v) for k, v in root.dirs.items()}}))
    try:
        ensure_daemon()
        reply = request(paths.control_socket(), {
            "op": "register", "id": cid, "pid": pid, "slot": slot,
            "cgroup": {k: str(v) for k, v in root.dirs.items()},
            "policy_yaml": yaml.safe_dump(policy.to_dict())})
    except DaemonUnavailable as e:
        return f"agentshim: warning: {e}; tool calls run unmanaged (limits still apply)"
    if not reply.get("ok"):
        return f"agentshim: warning: agentshimd refused registration: {reply.get('error')}"
    return f"managed: {reply.get('socket')}"


def poststop(state: dict[str, Any]) -> str:
    """Idempotent teardown: unregister (summary written by agentshimd), remove the tree, the
    container cgroup runc could not remove because of it, and the slot directory."""
    cid = str(state.get("id", ""))
    rec_path = _record_path(cid)
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError):
        return "nothing to do"
    with contextlib.suppress(DaemonUnavailable):
        request(paths.control_socket(), {"op": "unregister", "id": cid}, timeout_s=10.0)
    layout = detect_layout()
    root = Cgroup(layout, {k: Path(v) for k, v in rec["cgroup"].items()})
    with contextlib.suppress(CgroupError):
        ContainerTree(root).destroy(kill_calls=True)
    with contextlib.suppress(CgroupError):
        if not root.populated():
            root.remove(missing_ok=True)
    slot = str(rec.get("slot", ""))
    if slot and "/" not in slot and slot not in (".", ".."):
        shutil.rmtree(paths.slots_dir() / slot, ignore_errors=True)
    rec_path.unlink(missing_ok=True)
    return "cleaned up"


def read_state(text: str) -> dict[str, Any]:
    """Parse OCI state JSON (tolerating `bundlePath` for `bundle`)."""
    try:
        state = json.loads(text)
    except ValueError as e:
        raise HookError(f"agentshim: OCI state on stdin is not JSON: {e}") from e
    if not isinstance(state, dict) or "id" not in state:
        raise HookError("agentshim: OCI state on stdin has no container id")
    if "bundle" not in state and "bundlePath" in state:
        state["bundle"] = state["bundlePath"]
    return state
