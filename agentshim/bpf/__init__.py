"""BPF memory events of managed cgroups: hook point selection and the BCC loader.

Importing this package does not need bcc; creating a MemEvents does (BpfUnavailable if not).
"""

from agentshim.bpf.hooks import (
    DEFAULT_TYPES,
    EVENT_TYPES,
    Attach,
    HookPlan,
    detect_hook_points,
    plan_description,
)
from agentshim.bpf.loader import (
    BpfCompileError,
    BpfError,
    BpfUnavailable,
    EventType,
    MemEvent,
    MemEvents,
)

__all__ = [
    "DEFAULT_TYPES", "EVENT_TYPES", "Attach", "BpfCompileError", "BpfError", "BpfUnavailable",
    "EventType", "HookPlan", "MemEvent", "MemEvents", "detect_hook_points", "plan_description",
]
