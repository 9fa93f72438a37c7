"""Admission at call start on pure cgroup v2 (memory.current of the container and its calls):
the host tests of tests/host/test_admission.py, run inside the VM."""

from __future__ import annotations

import pytest

from tests.host.test_admission import (  # noqa: F401 (tests collected here too)
    test_a_call_into_a_full_container_waits_then_runs,
    test_a_high_priority_call_is_admitted_before_a_waiting_low_one,
)

pytestmark = pytest.mark.v2
