"""The cgroup layer: one interface over cgroup v2 and hybrid (v1 controllers + v2 tree) hosts."""

from agentshim.cgroups.cgroup import Cgroup, MemoryEvents, MemoryLimits, parse_flat_keyed
from agentshim.cgroups.errors import CgroupError
from agentshim.cgroups.layout import Layout, detect_layout, layout_from, parse_mountinfo
from agentshim.cgroups.psi import Pressure, PsiLine, PsiTrigger, arm_trigger, parse_pressure
from agentshim.cgroups.tree import CALL_PREFIX, FRAMEWORK, TOOLS, ContainerTree, TreeBudget

__all__ = [
    "CALL_PREFIX", "FRAMEWORK", "TOOLS", "Cgroup", "CgroupError", "ContainerTree", "Layout",
    "MemoryEvents", "MemoryLimits", "Pressure", "PsiLine", "PsiTrigger", "TreeBudget",
    "arm_trigger", "detect_layout", "layout_from", "parse_flat_keyed", "parse_mountinfo",
    "parse_pressure",
]
