"""Offloading a frozen call to swap on pure cgroup v2 (memory.reclaim), with zram in the VM:
the host tests of tests/host/test_offload.py, run inside the VM."""

from __future__ import annotations

import pytest

from tests.host.test_offload import (  # noqa: F401 (fixtures and tests collected here too)
    test_a_frozen_call_is_offloaded_and_reads_back_intact,
)

pytestmark = pytest.mark.v2
