"""Agent resource traces: the in-memory model, the published dataset's importer and
agentshim's own on-disk format."""

from agentshim.trace.dataset import find_traces, load_dataset
from agentshim.trace.format import load_trace, read_trace, write_trace
from agentshim.trace.model import Sample, ToolCall, Trace, TraceError

__all__ = [
    "Sample",
    "ToolCall",
    "Trace",
    "TraceError",
    "find_traces",
    "load_dataset",
    "load_trace",
    "read_trace",
    "write_trace",
]
