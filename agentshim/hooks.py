"""OCI hooks: precreate (config.json edits), prestart (tree + registration), poststop (teardown).

Podman runs them as `agentshim-hook precreate|prestart|poststop` (hooks/*.json; `main()` below),
`agentshim hook STAGE` does the same. Every container start runs three of them, so this module
imports only what each stage needs: the policy parser (and yaml) is loaded by precreate, which
leaves the container's budgets in a plan file for prestart; the cgroup layer by prestart and
poststop.

The precreate edits are one function, `edit_config`, shared with agentshim-runtime; the
poststop teardown is one function, `teardown`, shared with agentshim-runtime's `delete`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentshim import paths
from agentshim.protocol import DaemonUnavailable, request

if TYPE_CHECKING:
    from agentshim import policy as pol

ANNOTATION_SLOT = "io.agentshim.slot"
BASH_PATHS = ("/bin/bash", "/usr/bin/bash")
STAGES = ("precreate", "prestart", "poststop")
REGISTER_TIMEOUT_S = 10.0


class HookError(Exception):
    """A hook refuses the container; the message is shown by podman."""


def find_bash(root: Path, mounts: list[Any]) -> tuple[Path | None, list[str], str]:
    """The image's bash for the wrapper to stand in front of: (the root-owned copy to bind at
    the side path, the container paths to cover with the wrapper, a warning or "").

    Each of BASH_PATHS is resolved inside the rootfs from directory fds (agentshim.rootfs), so
    no symlink in the image can name a host file; a bash reached through a mount destination
    (a volume: its content is not the image's) is left alone. What is bound is a copy in
    <state>/bash/<sha256>, never a path in the rootfs."""
    from agentshim import rootfs

    destinations = [str(m.get("destination", "")) for m in mounts
                    if isinstance(m, dict) and m.get("destination")]
    try:
        root_fd = rootfs.open_rootfs(root)
    except OSError as e:
        return None, [], f"cannot open the rootfs {root}: {e.strerror}"
    targets: list[str] = []
    copy: Path | None = None
    notes: list[str] = []
    try:
        for p in BASH_PATHS:
            try:
                found = rootfs.resolve(root_fd, p)
            except rootfs.RootfsError as e:
                if e.errno != errno.ENOENT:
                    notes.append(f"{p}: {e}")
                continue
            try:
                mount = rootfs.covered_by(found.visited, destinations)
                if mount is not None:
                    notes.append(f"{p} leads through the mount at {mount}; not wrapped")
                    continue
                if copy is None:
                    try:
                        copy = rootfs.copy_to_store(found.fd, paths.state_dir() / "bash")
                    except (rootfs.RootfsError, OSError) as e:
                        notes.append(f"cannot copy {found.path}: {e}")
                        continue
                if found.path not in targets:
                    targets.append(found.path)
            finally:
                os.close(found.fd)
    finally:
        os.close(root_fd)
    if copy is None or not targets:
        return None, [], "; ".join(notes) or "the image has no bash"
    return copy, targets, "; ".join(notes)


def refusals_log() -> Path:
    """Where refusals are logged: podman 4.x does not show a precreate hook's stderr."""
    return paths.state_dir() / "refusals.log"


def policy_of(annotations: dict[str, str]) -> pol.Policy | None:
    """The container's policy from its annotations (None: not managed). Raises HookError,
    after appending the reason to refusals_log()."""
    from agentshim import policy as pol

    try:
        return pol.policy_from_annotations(annotations, paths.profiles_dir())
    except pol.PolicyInvalid as e:
        msg = f"agentshim: container refused: {e}"
        with contextlib.suppress(OSError):
            refusals_log().parent.mkdir(parents=True, exist_ok=True)
            with refusals_log().open("a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {msg}\n")
        raise HookError(msg) from e


# --- plan: what prestart needs, written by precreate ---------------------------------------


def _hooks_state() -> Path:
    return paths.state_dir() / "hooks"


def _plan_path(slot: str) -> Path:
    return _hooks_state() / f"slot-{slot}.json"


def _claim_path(slot: str) -> Path:
    """Which container owns a slot: written once (O_EXCL) by that container's prestart."""
    return _hooks_state() / "claims" / slot


def managed(annotations: dict[str, str]) -> bool:
    """Whether the annotations ask for agentshim (the precedence of
    policy.policy_from_annotations, without parsing a policy: prestart and poststop of an
    unmanaged container must not act on a copied io.agentshim.slot)."""
    from agentshim.policy import ANNOTATION_ENABLE, ANNOTATION_POLICY, ANNOTATION_PROFILE

    inline = annotations.get(ANNOTATION_POLICY)
    if isinstance(inline, str) and inline.strip():
        return True
    if annotations.get(ANNOTATION_PROFILE) is not None:
        return True
    return str(annotations.get(ANNOTATION_ENABLE, "")).strip().lower() in (
        "true", "1", "yes", "on")


def claim_slot(slot: str, cid: str) -> None:
    """Bind the slot to container cid (first claim wins; the same container may claim again).
    The claim is a symlink naming cid: made atomically, and it needs no data block on a full
    tmpfs. Raises HookError when another container holds it, OSError when it cannot be made."""
    path = _claim_path(slot)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.symlink(cid, path)
    except FileExistsError:
        owner = slot_owner(slot)
        if owner != cid:
            raise HookError(f"agentshim: slot {slot} belongs to container "
                            f"{(owner or '?')[:12]}; io.agentshim.slot must not be copied "
                            "from another container") from None


def slot_owner(slot: str) -> str | None:
    """The container that claimed the slot, or None."""
    try:
        return os.readlink(_claim_path(slot)) or None
    except OSError:
        return None


def make_plan(policy: pol.Policy) -> dict[str, Any]:
    """The container-level budgets (bytes, None = no limit) and the policy for agentshimd."""
    import yaml

    from agentshim.units import UNLIMITED

    def opt(x: int) -> int | None:
        return None if x >= UNLIMITED else x

    m = policy.memory
    return {"total": opt(m.total), "framework_low": opt(m.framework_protect),
            "tools_high": opt(m.tools),
            "policy_yaml": yaml.safe_dump(policy.to_dict(), sort_keys=False)}


def _safe_slot(slot: str) -> bool:
    return bool(slot) and "/" not in slot and slot not in (".", "..") and len(slot) <= 128


def _load_plan(slot: str) -> dict[str, Any] | None:
    """The plan precreate left for this slot, in a root-only host directory (never in the
    slot directory, which the container can write)."""
    if not _safe_slot(slot):
        return None
    try:
        plan = json.loads(_plan_path(slot).read_text())
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and "policy_yaml" in plan else None


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


# --- precreate ------------------------------------------------------------------------------


def _already_edited(config: dict[str, Any]) -> bool:
    return any(isinstance(m, dict) and m.get("destination") == paths.CONTAINER_RUN_DIR
               for m in config.get("mounts") or [])


def edit_config(config: dict[str, Any], bundle: Path | None = None) -> dict[str, Any]:
    """The precreate edits: wrapper over the image's bash, the real bash at a side path, the
    per-container broker directory mounted at /run/agentshim. Unmanaged containers, and
    configs edited already (precreate hook and agentshim-runtime both ran), are returned
    untouched. Raises HookError for a bad policy."""
    annotations = config.get("annotations") or {}
    policy = policy_of(annotations)
    if policy is None or _already_edited(config):
        return config
    root = Path((config.get("root") or {}).get("path", "rootfs"))
    if not root.is_absolute():
        root = (bundle or Path.cwd()) / root
    slot = os.urandom(8).hex()
    slot_dir = paths.slots_dir() / slot
    slot_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        _write_json(_plan_path(slot), make_plan(policy))
    except OSError as e:  # e.g. the state directory is full: prestart parses the annotations
        print(f"agentshim: warning: cannot write the plan: {e.strerror or e}", file=sys.stderr)
    mounts = config.setdefault("mounts", [])
    mounts.append({"destination": paths.CONTAINER_RUN_DIR, "type": "bind",
                   "source": str(slot_dir), "options": ["bind", "rw", "nosuid", "nodev"]})
    wrapper = paths.wrapper_binary()
    copy, targets, note = find_bash(root, mounts)
    if copy is not None and wrapper.exists():
        (slot_dir / "bash.real").touch()
        mounts.append({"destination": paths.CONTAINER_REAL_BASH, "type": "bind",
                       "source": str(copy), "options": ["bind", "ro", "nosuid", "nodev"]})
        for t in targets:
            mounts.append({"destination": t, "type": "bind", "source": str(wrapper),
                           "options": ["bind", "ro"]})
    if not wrapper.exists():
        print(f"agentshim: wrapper {wrapper} missing; tool calls will not be managed",
              file=sys.stderr)
    elif note:
        print(f"agentshim: {note}" + ("" if copy else "; tool calls will not be managed"),
              file=sys.stderr)
    env = config.setdefault("process", {}).setdefault("env", [])
    env[:] = [e for e in env if not e.startswith(("AGENTSHIM_SOCKET=", "AGENTSHIM_REAL_BASH="))]
    env += [f"AGENTSHIM_SOCKET={paths.CONTAINER_SOCKET}",
            f"AGENTSHIM_REAL_BASH={paths.CONTAINER_REAL_BASH}"]
    config.setdefault("annotations", {})[ANNOTATION_SLOT] = slot
    return config


# --- agentshimd -----------------------------------------------------------------------------


def ensure_daemon(timeout_s: float = 10.0) -> None:
    """Start agentshimd detached when its control socket does not answer."""
    with contextlib.suppress(DaemonUnavailable):
        request(paths.control_socket(), {"op": "status"}, timeout_s=1.0)
        return
    import subprocess

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


def register(req: dict[str, Any]) -> dict[str, Any]:
    """Send a register request; agentshimd is started first when it does not answer (one
    round trip when it runs, which is the usual case)."""
    try:
        return request(paths.control_socket(), req, timeout_s=REGISTER_TIMEOUT_S)
    except DaemonUnavailable:
        ensure_daemon()
    return request(paths.control_socket(), req, timeout_s=REGISTER_TIMEOUT_S)


def _record_path(cid: str) -> Path:
    return _hooks_state() / f"{cid}.json"


# --- prestart -------------------------------------------------------------------------------


def prestart(state: dict[str, Any]) -> str:
    """Build the tree, move the container into framework/, register with agentshimd.
    Returns a one-line status; a daemon that cannot be reached is a warning (fail-open)."""
    annotations = state.get("annotations") or {}
    if not managed(annotations):  # never act on a slot annotation copied into it
        return "not managed"
    slot = str(annotations.get(ANNOTATION_SLOT) or "")
    plan = _load_plan(slot)
    if plan is None:  # no precreate plan (or an engine that lost it): parse the annotations
        policy = policy_of(annotations)
        if policy is None:
            return "not managed"
        if not _safe_slot(slot):
            raise HookError("agentshim: no io.agentshim.slot annotation (precreate hook or "
                            "agentshim-runtime did not run)")
        plan = make_plan(policy)
    from agentshim.cgroups import Cgroup, CgroupError, ContainerTree, TreeBudget, detect_layout

    cid, pid = str(state["id"]), int(state["pid"])
    try:
        claim_slot(slot, cid)
    except OSError as e:
        return (f"agentshim: warning: cannot claim slot {slot} in {_hooks_state()}: "
                f"{e.strerror or e}; tool calls run unmanaged")
    root = Cgroup.of_pid(detect_layout(), pid)
    tree = ContainerTree(root)
    try:
        tree.build(TreeBudget(total=plan["total"], framework_low=plan["framework_low"],
                              tools_high=plan["tools_high"]))
    except CgroupError as e:
        raise HookError(f"agentshim: cannot build the cgroup tree: {e}") from e
    cgroup = {k: str(v) for k, v in root.dirs.items()}
    note = ""
    try:
        _write_json(_record_path(cid), {"slot": slot, "cgroup": cgroup})
    except OSError as e:  # the state directory is full: agentshimd tears it down instead
        note = (f"agentshim: warning: cannot write {_record_path(cid)}: {e.strerror or e}; "
                "agentshimd removes the tree when the container stops")
    try:
        reply = register({"op": "register", "id": cid, "pid": pid, "slot": slot,
                          "cgroup": cgroup, "policy_yaml": plan["policy_yaml"]})
    except DaemonUnavailable as e:
        return f"agentshim: warning: {e}; tool calls run unmanaged (limits still apply)"
    if not reply.get("ok"):
        return f"agentshim: warning: agentshimd refused registration: {reply.get('error')}"
    return note or f"managed: {reply.get('socket')}"


# --- poststop / teardown --------------------------------------------------------------------


def teardown(cid: str, slot: str = "", is_managed: bool = True,
             unregister: Callable[[str], object] | None = None,
             cgroup: dict[str, str] | None = None) -> str:
    """Idempotent: unregister (agentshimd writes the summary), remove the tree, the container
    cgroup the runtime could not remove because of it, and the slot directory, plan and claim
    when this container owns the slot. `slot` (from the annotations) is used when prestart
    never ran; `is_managed` False (annotations without agentshim) never touches a slot.
    `unregister` is agentshimd's own (its reaper, for a container whose poststop never ran),
    with the `cgroup` it registered (used when prestart could not write its record);
    without it the control socket is asked."""
    rec: dict[str, Any] = {}
    if cid and "/" not in cid:
        with contextlib.suppress(OSError, ValueError):
            rec = json.loads(_record_path(cid).read_text())
    slot = str(rec.get("slot") or slot)
    owner = slot_owner(slot) if _safe_slot(slot) else None
    owns = _safe_slot(slot) and (owner == cid or (owner is None and (bool(rec) or is_managed)))
    if not rec and unregister is None and not (owns and (paths.slots_dir() / slot).exists()):
        return "nothing to do"
    if unregister is not None:
        unregister(cid)
    elif rec:
        with contextlib.suppress(DaemonUnavailable):
            request(paths.control_socket(), {"op": "unregister", "id": cid}, timeout_s=10.0)
    _remove_tree(rec.get("cgroup") or cgroup or {})
    if owns:
        shutil.rmtree(paths.slots_dir() / slot, ignore_errors=True)
        _plan_path(slot).unlink(missing_ok=True)
        _claim_path(slot).unlink(missing_ok=True)
    _record_path(cid).unlink(missing_ok=True)
    return "cleaned up"


def _remove_tree(dirs: dict[str, str]) -> None:
    if not dirs:
        return
    from agentshim.cgroups import Cgroup, CgroupError, ContainerTree, detect_layout

    root = Cgroup(detect_layout(), {k: Path(v) for k, v in dirs.items()})
    with contextlib.suppress(CgroupError):
        ContainerTree(root).destroy(kill_calls=True)
    with contextlib.suppress(CgroupError):
        if not root.populated():
            root.remove(missing_ok=True)


def poststop(state: dict[str, Any]) -> str:
    """The poststop hook: teardown() of the container in the OCI state."""
    annotations = state.get("annotations") or {}
    return teardown(str(state.get("id", "")), str(annotations.get(ANNOTATION_SLOT) or ""),
                    is_managed=managed(annotations))


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


def run_stage(stage: str, stdin_text: str) -> tuple[int, str, str]:
    """Run one hook stage on its stdin text: (exit status, stdout, stderr)."""
    try:
        if stage == "precreate":
            try:
                config = json.loads(stdin_text)
            except ValueError as e:
                raise HookError(f"agentshim: config.json on stdin is not JSON: {e}") from e
            return 0, json.dumps(edit_config(config)), ""
        if stage == "prestart":
            msg = prestart(read_state(stdin_text))
            return 0, "", msg + "\n" if msg.startswith("agentshim: warning") else ""
        if stage == "poststop":
            poststop(read_state(stdin_text))
            return 0, "", ""
    except HookError as e:
        return 1, "", f"{e}\n"
    return 2, "", f"agentshim-hook: unknown stage {stage!r} (expected {', '.join(STAGES)})\n"


def main(argv: list[str] | None = None) -> int:
    """`agentshim-hook STAGE`: the OCI hook podman runs (stdin: config.json or OCI state)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in STAGES:
        print(f"usage: agentshim-hook {'|'.join(STAGES)}  (stdin: config.json or OCI state)",
              file=sys.stderr)
        return 2
    rc, out, err = run_stage(args[0], sys.stdin.read())
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())
