"""Where agentshim keeps things on the host and inside containers (one place for all paths).

Every host path can be moved with an environment variable, which the tests use to run several
independent daemons side by side.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default)


def run_dir() -> Path:
    """Runtime state: control socket, per-container slot directories."""
    return _env_path("AGENTSHIM_RUN_DIR", "/run/agentshim")


def slots_dir() -> Path:
    """One directory per managed container, bind-mounted into it (holds broker.sock)."""
    return run_dir() / "slots"


def control_socket() -> Path:
    """agentshimd's control socket (root only): register/unregister/status."""
    return run_dir() / "agentshimd.sock"


def state_dir() -> Path:
    """Persistent state: registry (survives daemon restarts), per-call records, summaries."""
    return _env_path("AGENTSHIM_STATE_DIR", "/var/lib/agentshim")


def profiles_dir() -> Path:
    """Named policies: NAME.yaml."""
    return _env_path("AGENTSHIM_PROFILES_DIR", "/etc/agentshim/profiles")


def cgroup_root_name() -> str:
    """Relative cgroup path for cgroups agentshim makes itself (replay without podman)."""
    return os.environ.get("AGENTSHIM_CGROUP_ROOT", "agentshim")


def wrapper_binary() -> Path:
    """The static Bash wrapper: $AGENTSHIM_WRAPPER, the installed one, or the checkout's."""
    env = os.environ.get("AGENTSHIM_WRAPPER")
    if env:
        return Path(env)
    installed = Path("/usr/libexec/agentshim/agentshim-bash")
    if installed.exists():
        return installed
    return REPO / "wrapper" / "agentshim-bash"


# Paths inside the container (fixed: the wrapper's defaults agree with them).
CONTAINER_RUN_DIR = "/run/agentshim"
CONTAINER_SOCKET = CONTAINER_RUN_DIR + "/broker.sock"
CONTAINER_REAL_BASH = CONTAINER_RUN_DIR + "/bash.real"
