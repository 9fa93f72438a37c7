"""Which cgroups and agentshimd files belong to a container: what `agentshim trace` records.

The container's cgroup is found the way the hooks find it: the prestart hook's record
``<state>/hooks/<id>.json`` (written when agentshim built the tree) when present, else from
the container's pid (``podman inspect``) through :meth:`Cgroup.of_pid`, stepping out of
``framework/`` where the prestart hook moved the agent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentshim import paths
from agentshim.cgroups import FRAMEWORK, TOOLS, Cgroup, CgroupError, Layout, detect_layout

__all__ = ["Target", "TargetError", "find_target", "podman_inspect", "target_from_cgroup"]

FULL_ID = re.compile(r"^[0-9a-f]{64}$")
PODMAN_TIMEOUT_S = 30.0

#: Runs podman with the given arguments; returns (exit status, stdout, stderr).
PodmanRunner = Callable[[Sequence[str]], tuple[int, str, str]]


class TargetError(Exception):
    """The container cannot be recorded; the message says why and what to check."""


@dataclass
class Target:
    """A container to record: its cgroups and where agentshimd writes about it."""

    id: str
    name: str | None
    root: Cgroup
    framework: Cgroup | None
    tools: Cgroup | None
    calls_file: Path
    events_file: Path
    summary_file: Path
    managed: bool
    found_by: str
    notes: tuple[str, ...] = ()

    def scopes(self) -> dict[str, Cgroup]:
        """The cgroups sampled, by scope name: container, and framework/tools when managed."""
        out = {"container": self.root}
        if self.framework is not None:
            out["framework"] = self.framework
        if self.tools is not None:
            out["tools"] = self.tools
        return out

    def describe(self) -> dict[str, Any]:
        """What meta.json keeps about the target."""
        return {"container_id": self.id, "container_name": self.name, "managed": self.managed,
                "found_by": self.found_by,
                "cgroups": {scope: {k: str(v) for k, v in cg.dirs.items()}
                            for scope, cg in self.scopes().items()},
                "calls_file": str(self.calls_file), "events_file": str(self.events_file)}


def _run_podman(args: Sequence[str]) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(["podman", *args], capture_output=True, text=True,
                              timeout=PODMAN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return 124, "", f"podman {' '.join(args)} did not answer within {PODMAN_TIMEOUT_S:g} s"
    return proc.returncode, proc.stdout, proc.stderr


def podman_inspect(container: str, run: PodmanRunner | None = None) -> dict[str, Any]:
    """``podman inspect`` of a container as a dict (Id, Name, State.Pid, State.Status, ...).

    Raises TargetError for an unknown container or when podman cannot be run.
    """
    if run is None:
        if shutil.which("podman") is None:
            raise TargetError(f"cannot look up container {container!r}: podman is not installed "
                              f"(give the full container id of a container agentshim manages)")
        run = _run_podman
    code, out, err = run(["inspect", "--type", "container", "--format", "json", container])
    if code != 0:
        detail = err.strip().splitlines()[-1] if err.strip() else f"exit status {code}"
        if "no such" in detail.lower():
            raise TargetError(f"unknown container {container!r} (podman: {detail})")
        raise TargetError(f"podman inspect {container!r} failed: {detail}")
    try:
        doc = json.loads(out)
    except ValueError:
        raise TargetError(f"podman inspect {container!r}: output is not JSON") from None
    if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict):
        raise TargetError(f"unknown container {container!r} (podman inspect returned nothing)")
    return doc[0]


def _hooks_record(cid: str, state_dir: Path) -> dict[str, Path] | None:
    path = state_dir / "hooks" / f"{cid}.json"
    try:
        rec = json.loads(path.read_text())
        dirs = {str(k): Path(v) for k, v in rec["cgroup"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return dirs or None


def target_from_cgroup(cid: str, root: Cgroup, state_dir: Path, name: str | None = None,
                       found_by: str = "cgroup") -> Target:
    """A Target for container ``cid`` whose cgroup is ``root`` (framework/ and tools/ are
    used when both exist: the container is managed)."""
    framework, tools = root.child(FRAMEWORK), root.child(TOOLS)
    managed = framework.exists() and tools.exists()
    return Target(id=cid, name=name, root=root,
                  framework=framework if managed else None, tools=tools if managed else None,
                  calls_file=state_dir / "calls" / f"{cid}.jsonl",
                  events_file=state_dir / "events" / f"{cid}.jsonl",
                  summary_file=state_dir / "summaries" / f"{cid}.json",
                  managed=managed, found_by=found_by)


def find_target(container: str, state_dir: Path | None = None, layout: Layout | None = None,
                podman: PodmanRunner | None = None) -> Target:
    """Resolve a container name or id to what `agentshim trace` records.

    A full 64-hex id with a prestart record in ``<state>/hooks/`` needs no podman; anything
    else is looked up with ``podman inspect`` (names, short ids). Raises TargetError for an
    unknown container, one that is not running, or one whose cgroup cannot be found.
    """
    state = state_dir if state_dir is not None else paths.state_dir()
    lay = layout if layout is not None else detect_layout()
    name: str | None = None
    cid = container
    info: dict[str, Any] | None = None
    if not (FULL_ID.match(container) and _hooks_record(container, state)):
        info = podman_inspect(container, podman)
        cid = str(info.get("Id") or "")
        if not FULL_ID.match(cid):
            raise TargetError(f"podman inspect {container!r}: no container id in its answer")
        name = str(info.get("Name") or "").lstrip("/") or None
        status = (info.get("State") or {}).get("Status")
        if status not in (None, "running", "paused"):
            raise TargetError(f"container {name or cid[:12]} is not running (state: {status})")
    notes: list[str] = []
    dirs = _hooks_record(cid, state)
    if dirs is not None:
        root = Cgroup(lay, dirs)
        found_by = f"prestart record {state / 'hooks' / (cid + '.json')}"
    else:
        pid = int((info or {}).get("State", {}).get("Pid") or 0)
        if pid <= 0:
            raise TargetError(f"container {name or cid[:12]} has no running process "
                              f"(podman reports pid {pid})")
        try:
            root = Cgroup.of_pid(lay, pid)
        except CgroupError as exc:
            raise TargetError(f"cannot find the cgroup of container {name or cid[:12]}: "
                              f"{exc}") from None
        if root.name == FRAMEWORK:  # the prestart hook moved the agent into framework/
            root = Cgroup(lay, {k: d.parent for k, d in root.dirs.items()})
        found_by = f"podman inspect (pid {pid})"
    if not root.exists():
        raise TargetError(f"the cgroup of container {name or cid[:12]} does not exist "
                          f"({root.primary}): is it running?")
    try:
        running = root.populated()
    except CgroupError:
        running = False
    if not running:
        raise TargetError(f"container {name or cid[:12]} is not running (its cgroup "
                          f"{root.primary} holds no process)")
    target = target_from_cgroup(cid, root, state, name, found_by)
    if target.managed and dirs is None:
        notes.append(f"no prestart record in {state / 'hooks'}: agentshimd's call records "
                     f"are read from {target.calls_file} (set AGENTSHIM_STATE_DIR to the "
                     f"daemon's state directory if that is not it)")
    if not target.managed:
        notes.append(f"container {name or cid[:12]} is not managed by agentshim (no "
                     f"framework/ and tools/ under {root.primary}): recording the container's "
                     f"own memory, CPU and PSI only, no tool calls")
    target.notes = tuple(notes)
    return target
