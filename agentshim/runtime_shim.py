"""agentshim-runtime: an OCI runtime shim around runc/crun (the nvidia-container-runtime pattern).

On `create` it applies agentshim's precreate edits (agentshim.hooks.edit_config) to the bundle's
config.json, then execs the real runtime with the unchanged arguments; every other command passes
straight through. Use it with `podman --runtime /usr/bin/agentshim-runtime`, or with engines that
have no precreate stage (CRI-O). The real runtime is $AGENTSHIM_RUNTIME, else runc on hybrid
cgroup hosts (crun refuses them) and crun elsewhere, whichever exists.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from agentshim.cgroups import detect_layout
from agentshim.hooks import HookError, edit_config

# Global options of runc/crun that take a value (given as `--opt value` or `--opt=value`).
GLOBAL_WITH_VALUE = {"--root", "--log", "--log-format", "--criu", "--rootless",
                     "--cgroup-manager"}


def real_runtime() -> str:
    """Path of the runtime to exec."""
    env = os.environ.get("AGENTSHIM_RUNTIME")
    if env:
        return env
    order = ["runc", "crun"] if detect_layout().mode != "v2" else ["crun", "runc"]
    for name in order:
        found = shutil.which(name)
        if found:
            return found
    raise HookError("agentshim-runtime: neither runc nor crun found (set AGENTSHIM_RUNTIME)")


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


def main(argv: list[str] | None = None) -> int:
    """Entry point: edit on create, then exec the real runtime."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        runtime = real_runtime()
        idx = find_command(args)
        if idx is not None and args[idx] == "create":
            bundle = bundle_of(args[idx + 1:])
            cfg_path = bundle / "config.json"
            config = json.loads(cfg_path.read_text())
            edited = edit_config(config, bundle=bundle)
            tmp = cfg_path.with_suffix(".agentshim.tmp")
            tmp.write_text(json.dumps(edited))
            os.replace(tmp, cfg_path)
    except (HookError, OSError, ValueError) as e:
        print(f"agentshim-runtime: {e}", file=sys.stderr)
        return 1
    os.execv(runtime, [runtime, *args])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
