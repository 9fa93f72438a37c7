"""agentshimd: the host daemon (broker, registry, enforcement)."""

from __future__ import annotations

import sys


def main() -> int:
    """Entry point of agentshimd."""
    sys.stderr.write("agentshimd: not built yet (see issue: Podman integration)\n")
    return 1
