"""The replay's own agentshimd: private run and state directories, a hooks directory for
podman pointing at the running agentshim, the static wrapper; stopped at the end. Nothing of
the host's agentshim (installed hooks, a system agentshimd) is used or touched."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agentshim import paths
from agentshim.cgroups import Cgroup
from agentshim.enforce.eventlog import read_jsonl
from agentshim.protocol import DaemonUnavailable, request

PKG_PARENT = Path(__file__).resolve().parents[2]
STAGES = ("precreate", "prestart", "poststop")
ANNOTATIONS = r"^io\.agentshim\.(policy|profile|enable)$"


class ServiceError(RuntimeError):
    """agentshimd, its wrapper or its hooks could not be set up; the message says why."""


def ensure_wrapper(progress: Any = print) -> Path:
    """The static Bash wrapper: the checkout's (built with make when needed), else the one
    paths.wrapper_binary() finds."""
    src = paths.REPO / "wrapper"
    if (src / "Makefile").exists():
        if not (src / "agentshim-bash").exists():
            progress("building the static Bash wrapper (make -C wrapper) ...")
        r = subprocess.run(["make", "-s", "-C", str(src)], capture_output=True, text=True,
                           check=False)
        if r.returncode != 0:
            raise ServiceError(f"make -C {src} failed: {r.stderr.strip()[-500:]}")
        return src / "agentshim-bash"
    found = paths.wrapper_binary()
    if not found.exists():
        raise ServiceError(f"the Bash wrapper {found} is missing (make -C wrapper, or "
                           "make install)")
    return found


class PrivateAgentshim:
    """agentshimd with state under `work`, plus the hooks podman needs to use it."""

    def __init__(self, work: Path, swap: bool = True) -> None:
        self.work = work
        self.swap = swap  # False: the replay's host never swaps, so budgets bound swap too
        self.run_dir = work / "run"
        self.state_dir = work / "state"
        self.hooks_dir = work / "hooks.d"
        self.proc: subprocess.Popen[bytes] | None = None
        self.wrapper: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        """What agentshim processes (daemon, hooks) of this replay get in their environment."""
        env = {"AGENTSHIM_RUN_DIR": str(self.run_dir), "AGENTSHIM_STATE_DIR": str(self.state_dir),
               "PYTHONPATH": os.pathsep.join(
                   p for p in (str(PKG_PARENT), os.environ.get("PYTHONPATH", "")) if p)}
        if self.wrapper is not None:
            env["AGENTSHIM_WRAPPER"] = str(self.wrapper)
        env["AGENTSHIM_SWAP_POLICY"] = "page" if self.swap else "bound"
        return env

    def control(self) -> Path:
        """The control socket."""
        return self.run_dir / "agentshimd.sock"

    def start(self, progress: Any = print, timeout_s: float = 15.0) -> None:
        """Build the wrapper, write the hooks, start agentshimd and wait until it answers."""
        self.wrapper = ensure_wrapper(progress)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.write_hooks()
        log = open(self.state_dir / "agentshimd.log", "ab")  # noqa: SIM115 (child keeps it)
        self.proc = subprocess.Popen([sys.executable, "-m", "agentshim.daemon"],
                                     env={**os.environ, **self.env}, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.request({"op": "status"}, timeout_s=1.0)
                return
            except DaemonUnavailable as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise ServiceError(f"agentshimd did not start: {e}\n{tail}") from None
                time.sleep(0.05)

    def log_tail(self, lines: int = 15) -> str:
        """The end of agentshimd's log."""
        with contextlib.suppress(OSError):
            return "\n".join((self.state_dir / "agentshimd.log").read_text(
                errors="replace").splitlines()[-lines:])
        return ""

    def write_hooks(self) -> None:
        """hooks.d JSON for podman --hooks-dir, calling this agentshim with this env."""
        self.hooks_dir.mkdir(parents=True, exist_ok=True)
        script = self.work / "agentshim-hook"
        code = "import sys; from agentshim.hooks import main; sys.exit(main())"
        script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "
                          f"{shlex.quote(code)} \"$@\"\n")
        script.chmod(0o755)
        env = [f"{k}={v}" for k, v in self.env.items()]
        env.append(f"PATH={os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")
        for stage in STAGES:
            spec = {"version": "1.0.0",
                    "hook": {"path": str(script), "args": ["agentshim-hook", stage],
                             "env": env},
                    "when": {"annotations": {ANNOTATIONS: ".*"}}, "stages": [stage]}
            (self.hooks_dir / f"agentshim-{stage}.json").write_text(json.dumps(spec, indent=1))

    def request(self, obj: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        """One control request."""
        return request(self.control(), obj, timeout_s=timeout_s)

    def register(self, cid: str, slot: str, pid: int, cgroup: Cgroup, policy_yaml: str) -> Path:
        """Register a bare tenant (its tree is built); returns its broker socket."""
        reply = self.request({"op": "register", "id": cid, "slot": slot, "pid": pid,
                              "cgroup": {k: str(v) for k, v in cgroup.dirs.items()},
                              "policy_yaml": policy_yaml})
        if not reply.get("ok"):
            raise ServiceError(f"agentshimd refused {cid}: {reply.get('error')}")
        return Path(str(reply["socket"]))

    def unregister(self, cid: str) -> None:
        """Unregister (agentshimd finishes the records of calls still open)."""
        with contextlib.suppress(DaemonUnavailable):
            self.request({"op": "unregister", "id": cid})

    def records(self, cid: str) -> list[dict[str, Any]]:
        """Call records of a container (docs/events.md)."""
        return read_jsonl(self.state_dir / "calls" / f"{cid}.jsonl")

    def events(self, cid: str) -> list[dict[str, Any]]:
        """Event log of a container (docs/events.md); empty until the ladder writes one."""
        return read_jsonl(self.state_dir / "events" / f"{cid}.jsonl")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop agentshimd (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
