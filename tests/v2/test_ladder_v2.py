"""The enforcement ladder on pure cgroup v2 (memory.high throttling, cgroup.freeze,
cgroup.kill, memory.events notifications): the host tests, run inside the VM."""

from __future__ import annotations

import pytest

from tests.host.test_ladder import (  # noqa: F401 (fixtures and tests collected here too)
    daemon,
    host,
    test_call_over_its_budget_is_throttled_frozen_then_killed_alone,
    test_growing_call_is_frozen_near_the_total_and_thawed_when_a_sibling_ends,
    test_low_priority_call_is_frozen_first_and_thawed_after,
    test_over_the_mark_a_frozen_lower_priority_call_is_killed_to_make_room,
)

pytestmark = pytest.mark.v2
