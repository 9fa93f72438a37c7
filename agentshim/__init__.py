"""agentshim: memory domains at tool-call granularity for AI coding agents."""

__version__ = "0.1.0"
