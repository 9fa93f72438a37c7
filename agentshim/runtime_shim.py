"""agentshim-runtime: an OCI runtime shim around runc/crun (the nvidia-container-runtime pattern),
for engines without hooks.d or a precreate stage (CRI-O, or podman without agentshim's hooks
installed): `podman --runtime /usr/bin/agentshim-runtime run --annotation ... IMAGE`.

  create   agentshim's precreate edits (agentshim.hooks.edit_config) on the bundle's
           config.json, plus a prestart hook in it (`agentshim-hook prestart`, with this
           process's AGENTSHIM_* environment) that builds the tree and registers with
           agentshimd; then the real runtime.
  delete   the poststop teardown (agentshim.hooks.teardown: unregister, tree, slot directory)
           when the container is stopped or --force is given; then the real runtime.
  ...      everything else passes straight to the real runtime.

Both steps leave alone what agentshim's hooks.d hooks did already, so the shim and the hooks
can be installed together. The real runtime is $AGENTSHIM_RUNTIME, else runc on hybrid cgroup
hosts (crun refuses them) and crun elsewhere, whichever exists. Engines usually run the
runtime with an empty environment: set AGENTSHIM_* for the shim in a wrapper script if the
defaults do not fit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# Global options of runc/crun that take a value (given as `--opt value` or `--opt=value`).
GLOBAL_WITH_VALUE = {"--root", "--log", "--log-format", "--criu", "--rootless",
                     "--cgroup-manager"}
# Options of `delete` that take a value: none in runc or crun; flags only.


class ShimError(Exception):
    """The shim cannot do its part; the engine shows the message."""


def real_runtime() -> str:
    """Path of the runtime to exec."""
    env = os.environ.get("AGENTSHIM_RUNTIME")
    if env:
        return env
    from agentshim.cgroups import detect_layout

    order = ["runc", "crun"] if detect_layout().mode != "v2" else ["crun", "runc"]
    for name in order:
        found = shutil.which(name) or next(
            (str(p) for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
             if os.access(p := Path(d) / name, os.X_OK)), None)
        if found:
            return found
    raise ShimError("agentshim-runtime: neither runc nor crun found (set AGENTSHIM_RUNTIME)")


def find_command(args: list[str]) -> int | None:
    """Index of the subcommand in a runtime argv (after global options), or None."""
    i = 0
    while i < len(args):
        a = args[i]
        if a in GLOBAL_WITH_VALUE:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return i
    return None


def bundle_of(sub_args: list[str]) -> Path:
    """The --bundle/-b directory of a create command (default: the current directory)."""
    for i, a in enumerate(sub_args):
        if a in ("--bundle", "-b") and i + 1 < len(sub_args):
            return Path(sub_args[i + 1])
        if a.startswith("--bundle="):
            return Path(a.split("=", 1)[1])
    return Path.cwd()


def container_id_of(sub_args: list[str]) -> str | None:
    """The container id of a delete/state command: its last argument that is no option."""
    ids = [a for a in sub_args if not a.startswith("-")]
    return ids[-1] if ids else None


def hook_command(stage: str) -> list[str]:
    """argv of agentshim's hook for a stage: agentshim-hook next to this shim or this
    interpreter, else this interpreter running agentshim.hooks."""
    for d in (Path(sys.argv[0]).resolve().parent, Path(sys.executable).parent):
        exe = d / "agentshim-hook"
        if os.access(exe, os.X_OK):
            return [str(exe), stage]
    return [sys.executable, "-P", "-m", "agentshim.hooks", stage]


def _is_agentshim_hook(hook: Any, stage: str) -> bool:
    if not isinstance(hook, dict):
        return False
    words = [str(hook.get("path", "")), *(str(a) for a in hook.get("args") or [])]
    return stage in words and any("agentshim" in w for w in words)


def add_prestart_hook(config: dict[str, Any]) -> bool:
    """Put agentshim's prestart hook into config (unless one is there, e.g. from hooks.d).
    The hook gets this process's AGENTSHIM_* and PATH (and PYTHONPATH) environment.
    Returns True when config changed."""
    hooks = config.setdefault("hooks", {})
    prestart = hooks.setdefault("prestart", [])
    if any(_is_agentshim_hook(h, "prestart") for h in prestart):
        return False
    argv = hook_command("prestart")
    env = [f"{k}={v}" for k, v in sorted(os.environ.items())
           if k.startswith("AGENTSHIM_") or k in ("PATH", "PYTHONPATH")]
    if not any(e.startswith("PATH=") for e in env):
        env.append("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    prestart.append({"path": argv[0], "args": argv, "env": env, "timeout": 30})
    return True


def on_create(sub_args: list[str]) -> None:
    """Edit the bundle's config.json for a managed container (no change otherwise)."""
    from agentshim.hooks import ANNOTATION_SLOT, HookError, edit_config

    bundle = bundle_of(sub_args)
    cfg_path = bundle / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
        edited = edit_config(config, bundle=bundle)
    except HookError as e:
        raise ShimError(str(e)) from e
    except (OSError, ValueError) as e:
        raise ShimError(f"agentshim-runtime: cannot read {cfg_path}: {e}") from e
    if ANNOTATION_SLOT not in (edited.get("annotations") or {}):
        return  # not managed
    add_prestart_hook(edited)
    tmp = cfg_path.with_name(cfg_path.name + ".agentshim.tmp")
    tmp.write_text(json.dumps(edited))
    os.replace(tmp, cfg_path)


def _stopped(runtime: str, global_args: list[str], cid: str) -> bool:
    """True when the real runtime reports the container stopped (or does not know it)."""
    try:
        r = subprocess.run([runtime, *global_args, "state", cid], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if r.returncode != 0:
        return True
    with contextlib.suppress(ValueError, AttributeError):
        return json.loads(r.stdout).get("status") == "stopped"
    return False


def on_delete(runtime: str, global_args: list[str], sub_args: list[str]) -> None:
    """agentshim's poststop teardown before the runtime deletes the container (so the
    runtime can remove the container cgroup itself)."""
    cid = container_id_of(sub_args)
    if not cid:
        return
    force = any(a in ("-f", "--force") or a.startswith("--force=") for a in sub_args)
    if not force and not _stopped(runtime, global_args, cid):
        return  # the runtime refuses to delete a running container; nothing to undo
    from agentshim.hooks import teardown

    try:
        teardown(cid)
    except Exception as e:  # the delete must go on: a leftover is better than a stuck engine
        print(f"agentshim-runtime: teardown of {cid}: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point: agentshim's part of create/delete, then exec the real runtime."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        runtime = real_runtime()
        idx = find_command(args)
        if idx is not None and args[idx] == "create":
            on_create(args[idx + 1:])
        elif idx is not None and args[idx] == "delete":
            on_delete(runtime, args[:idx], args[idx + 1:])
    except ShimError as e:
        print(str(e), file=sys.stderr)
        return 1
    os.execv(runtime, [runtime, *args])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
