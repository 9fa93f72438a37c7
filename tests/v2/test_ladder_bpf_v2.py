"""agentshimd's BPF programs on the VM's 6.1 kernel (kprobes there): the host tests, run on
pure cgroup v2."""

from __future__ import annotations

import pytest

from tests.host.test_ladder_bpf import (  # noqa: F401 (fixture and tests collected here too)
    bpf_daemon,
    test_exec_events_name_the_commands_of_a_call_even_in_nested_cgroups,
    test_no_program_of_ours_remains_after_the_daemon_stops,
    test_status_describes_the_hook_points_chosen,
)

pytestmark = pytest.mark.v2
