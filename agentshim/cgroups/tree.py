"""The per-container tree agentshim builds under a container's cgroup:

    <container>        memory max = policy total
      framework/       the agent itself; memory low protects it
      tools/           memory high = tools budget
        call-<seq>/    one per tool call: its grant as memory high; freeze/kill act here only
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
from dataclasses import dataclass

from agentshim.cgroups.cgroup import Cgroup, MemoryLimits
from agentshim.cgroups.errors import CgroupError

FRAMEWORK = "framework"
TOOLS = "tools"
CALL_PREFIX = "call-"


@dataclass(frozen=True)
class TreeBudget:
    """The container-level budgets of a policy, in bytes (None: no limit)."""

    total: int | None = None
    framework_low: int | None = None
    tools_high: int | None = None


def move_all(src: Cgroup, dst: Cgroup, rounds: int = 20) -> list[int]:
    """Move every process of src (not its children) into dst; repeats for processes forked
    meanwhile. Returns the pids moved. Processes that exit meanwhile are skipped."""
    moved: list[int] = []
    for _ in range(rounds):
        pids = src.procs()
        if not pids:
            return moved
        for pid in pids:
            try:
                dst.move(pid)
                moved.append(pid)
            except CgroupError as e:
                if e.errno != errno.ESRCH:
                    raise
    if src.procs():
        raise CgroupError("move processes out of", src.primary,
                          OSError(errno.EAGAIN, f"still forking after {rounds} rounds"))
    return moved


class ContainerTree:
    """framework/, tools/ and tools/call-N/ under one container's cgroup."""

    def __init__(self, root: Cgroup) -> None:
        self.root = root
        self.framework = root.child(FRAMEWORK)
        self.tools = root.child(TOOLS)

    def __repr__(self) -> str:
        return f"ContainerTree({self.root.primary})"

    def exists(self) -> bool:
        """True when framework/ and tools/ exist."""
        return self.framework.exists() and self.tools.exists()

    def build(self, budget: TreeBudget) -> list[int]:
        """Create the tree, move the container's processes into framework/, then enable
        controllers (cgroup v2's no-internal-process rule) and apply the budgets.

        All or nothing: on error, processes go back to the container cgroup, the directories
        made are removed, and the CgroupError is raised. Returns the pids moved.
        """
        created: list[Cgroup] = []
        moved: list[int] = []
        try:
            for cg in (self.framework, self.tools):
                if not cg.exists():
                    cg.create(exist_ok=True)
                    created.append(cg)
            moved = move_all(self.root, self.framework)
            self.root.enable_controllers()
            self.tools.enable_controllers()
            self.root.set_memory(MemoryLimits(max=budget.total))
            self.framework.set_memory(MemoryLimits(low=budget.framework_low))
            self.tools.set_memory(MemoryLimits(high=budget.tools_high))
        except BaseException:
            self._rollback(created)
            raise
        return moved

    def _rollback(self, created: list[Cgroup]) -> None:
        with contextlib.suppress(CgroupError):
            self.tools.disable_controllers()
        with contextlib.suppress(CgroupError):
            self.root.disable_controllers()
        for cg in created:
            with contextlib.suppress(CgroupError):
                move_all(cg, self.root)
            with contextlib.suppress(CgroupError):
                cg.remove()

    # --- tool calls -----------------------------------------------------------------------
    def call(self, seq: int) -> Cgroup:
        """The cgroup of tool call `seq` (not created)."""
        if seq < 0:
            raise ValueError(f"call sequence must be >= 0, not {seq}")
        return self.tools.child(f"{CALL_PREFIX}{seq}")

    def create_call(self, seq: int, limits: MemoryLimits, pid: int | None = None,
                    bound_swap: bool = True) -> Cgroup:
        """Create tools/call-<seq>, apply its budget and move `pid` in. All or nothing.
        With bound_swap (and no `limits.swap` given) the budget bounds memory and swap
        together, so a call over its budget waits or is killed at it on a host with swap too,
        rather than growing into swap (agentshim offloads a frozen call itself:
        Cgroup.offload); bound_swap=False leaves the call's swap alone."""
        if bound_swap and limits.swap is None:
            limits = dataclasses.replace(limits, swap=0)
        cg = self.call(seq)
        cg.create()
        try:
            cg.set_memory(limits)
            if pid is not None:
                cg.move(pid)
        except BaseException:
            with contextlib.suppress(CgroupError):
                move_all(cg, self.framework)
            with contextlib.suppress(CgroupError):
                cg.remove()
            raise
        return cg

    def calls(self) -> list[Cgroup]:
        """The call cgroups that exist now."""
        return [c for c in self.tools.children() if c.name.startswith(CALL_PREFIX)]

    def remove_call(self, seq: int, kill: bool = True) -> None:
        """Remove a call's cgroup (killing what is left in it when kill=True); idempotent."""
        self.call(seq).remove_tree(kill=kill)

    # --- teardown -------------------------------------------------------------------------
    def destroy(self, kill_calls: bool = True) -> None:
        """Remove the whole tree; idempotent. Tool calls still running are killed (or, with
        kill_calls=False, moved back like the framework); framework processes are moved back
        into the container cgroup, never killed."""
        if not any(d.exists() for cg in (self.framework, self.tools) for d in cg.dirs.values()):
            return
        for call in self.calls():
            if kill_calls:
                call.remove_tree(kill=True)
        with contextlib.suppress(CgroupError):
            self.tools.disable_controllers()
        with contextlib.suppress(CgroupError):
            self.root.disable_controllers()
        for cg in [*self.calls(), self.tools, self.framework]:
            for sub in cg.walk_post_order():
                if any(d.exists() for d in sub.dirs.values()):
                    move_all(sub, self.root)
        for cg in (self.tools, self.framework):
            for sub in cg.walk_post_order():
                sub.remove(missing_ok=True)
