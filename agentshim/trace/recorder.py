"""The live recorder behind `agentshim trace`: a steady time series of a container's cgroups
plus agentshimd's call records and events, written as a trace (format version 1) as it goes.

Every tick (100 ms by default) it reads, for the container and, when agentshim manages it,
its ``framework/`` and ``tools/`` cgroups: memory usage (v2 ``memory.current``, v1
``memory.usage_in_bytes``), CPU time (v1 ``cpuacct.usage``, v2 ``cpu.stat``) turned into a
percentage of one CPU over the interval, and memory PSI (``memory.pressure`` of the v2 tree:
some/full avg10 and totals). Files are kept open and re-read with ``pread`` at offset 0, so a
tick costs a few system calls. Ticks are scheduled on a monotonic clock (sleep to the next
tick, ticks that cannot be kept are skipped and counted, never bunched). agentshimd's
``calls/<id>.jsonl`` and ``events/<id>.jsonl`` are followed every few ticks.

Recording stops when :meth:`Recorder.request_stop` is called (signals), after ``duration_s``,
or when the container's cgroup is gone or holds no process any more; then agentshimd's last
records are waited for briefly and meta.json gets the end time and the recorder's own CPU use.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

from agentshim import __version__
from agentshim.cgroups import Cgroup, CgroupError, parse_flat_keyed, parse_pressure
from agentshim.trace.daemon_log import JsonlTail, call_from_record, event_from_line
from agentshim.trace.dataset import OWN_META
from agentshim.trace.format import (
    CALLS,
    EVENTS,
    SAMPLES,
    call_line,
    dump_line,
    sample_line,
    write_meta,
)
from agentshim.trace.model import Sample, ToolCall
from agentshim.trace.target import Target

__all__ = ["RecordResult", "Recorder", "RecorderError", "ScopeReader", "ScopeReading", "Status"]

DEFAULT_INTERVAL_S: Final = 0.1
#: agentshimd's files are followed every this many seconds (not every tick).
LOG_POLL_S: Final = 0.5
#: After the container exits, wait this long at most for agentshimd's last records.
EXIT_GRACE_S: Final = 5.0
#: Buffered lines are flushed to disk at least this often.
FLUSH_S: Final = 1.0


class RecorderError(Exception):
    """Recording cannot start; the message names the problem."""


@dataclass(frozen=True)
class ScopeReading:
    """One read of a cgroup: memory bytes, cumulative CPU ns, memory PSI (None: no file)."""

    mono: float
    mem_bytes: int
    cpu_ns: int | None
    psi: dict[str, Any] | None


def _pread_text(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("ascii", "replace")


class ScopeReader:
    """Reads one cgroup's memory usage, CPU time and memory PSI through file descriptors kept
    open (``pread`` at offset 0 makes cgroupfs generate the value again)."""

    def __init__(self, cgroup: Cgroup) -> None:
        self.cgroup = cgroup
        v2 = cgroup.layout.mode == "v2"
        unified = cgroup.dirs.get("unified")
        mem_dir = unified if v2 else cgroup.dirs.get("memory")
        if mem_dir is None:
            raise CgroupError("find the memory hierarchy of", cgroup.primary,
                              OSError(errno.ENOTSUP, "no memory hierarchy"))
        self.mem_path = mem_dir / ("memory.current" if v2 else "memory.usage_in_bytes")
        if "cpuacct" in cgroup.dirs and not v2:
            self.cpu_path: Path | None = cgroup.dirs["cpuacct"] / "cpuacct.usage"
            self._cpu_ns_per_unit = 1
        elif unified is not None:
            self.cpu_path = unified / "cpu.stat"
            self._cpu_ns_per_unit = 1000
        else:
            self.cpu_path = None
            self._cpu_ns_per_unit = 1
        self.psi_path = unified / "memory.pressure" if unified is not None else None
        self.events_path = unified / "cgroup.events" if unified is not None else None
        self._mem = self._open(self.mem_path, required=True)
        self._cpu = self._open(self.cpu_path)
        self._psi = self._open(self.psi_path)
        self._events = self._open(self.events_path)

    @staticmethod
    def _open(path: Path | None, required: bool = False) -> int | None:
        if path is None:
            return None
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if required:
                raise CgroupError("open", path, exc) from exc
            return None

    def read(self) -> ScopeReading:
        """Read memory, CPU and PSI now. Raises CgroupError when the cgroup is gone."""
        try:
            mem = int(_pread_text(self._mem).strip())
        except OSError as exc:
            raise CgroupError("read", self.mem_path, exc) from exc
        except ValueError as exc:
            raise CgroupError("parse", self.mem_path, OSError(errno.EINVAL, str(exc))) from exc
        mono = time.monotonic()
        cpu: int | None = None
        if self._cpu is not None:
            with contextlib.suppress(OSError, ValueError):
                text = _pread_text(self._cpu)
                value = (int(text.strip()) if self._cpu_ns_per_unit == 1
                         else parse_flat_keyed(text)["usage_usec"])
                cpu = value * self._cpu_ns_per_unit
        psi: dict[str, Any] | None = None
        if self._psi is not None:
            with contextlib.suppress(OSError, ValueError):
                pressure = parse_pressure(_pread_text(self._psi))
                full = pressure.full
                psi = {"some_avg10": pressure.some.avg10,
                       "full_avg10": full.avg10 if full is not None else None,
                       "some_total_us": pressure.some.total_us,
                       "full_total_us": full.total_us if full is not None else None}
        return ScopeReading(mono, mem, cpu, psi)

    def populated(self) -> bool | None:
        """True/False from the v2 tree's cgroup.events; None when this host has none."""
        if self._events is None:
            return None
        try:
            events = parse_flat_keyed(_pread_text(self._events))
        except OSError:
            return False  # the cgroup was removed
        return events.get("populated", 1) == 1 if events else None

    def close(self) -> None:
        """Close the files."""
        for fd in (self._mem, self._cpu, self._psi, self._events):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._mem = self._cpu = self._psi = self._events = None  # type: ignore[assignment]


def _cpu_pct(prev: ScopeReading | None, cur: ScopeReading) -> float | None:
    if prev is None or prev.cpu_ns is None or cur.cpu_ns is None or cur.mono <= prev.mono:
        return None
    pct = (cur.cpu_ns - prev.cpu_ns) / 1e9 / (cur.mono - prev.mono) * 100
    return round(max(0.0, pct), 2)


class _Lateness:
    """How late ticks were, in a fixed histogram (0.1 ms steps up to 1 s; the rest in one
    overflow bucket), so a recording of days keeps constant memory."""

    STEP_MS: Final = 0.1
    BUCKETS: Final = 10_000

    def __init__(self) -> None:
        self.counts = [0] * (self.BUCKETS + 1)
        self.n = 0
        self.max_ms = 0.0

    def add(self, late_s: float) -> None:
        ms = max(0.0, late_s * 1000)
        self.counts[min(self.BUCKETS, int(ms / self.STEP_MS))] += 1
        self.n += 1
        self.max_ms = max(self.max_ms, ms)

    def quantile(self, q: float) -> float:
        """Upper edge of the bucket holding the q-quantile, in ms (0 without ticks)."""
        if not self.n:
            return 0.0
        rank, seen = q * self.n, 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                if i == self.BUCKETS:  # the overflow bucket: only the maximum is known
                    return self.max_ms
                return min(self.max_ms, (i + 1) * self.STEP_MS)
        return self.max_ms

    def summary(self) -> dict[str, float]:
        return {"p50": round(self.quantile(0.5), 2), "p99": round(self.quantile(0.99), 2),
                "max": round(self.max_ms, 2)}


@dataclass(frozen=True)
class Status:
    """What the live status line shows."""

    elapsed_s: float
    samples: int
    mem_bytes: int | None
    tools_mem_bytes: int | None
    calls: int
    events: int


@dataclass
class RecordResult:
    """How a recording went (also kept in meta.json)."""

    out_dir: Path
    samples: int
    calls: int
    events: int
    duration_s: float
    stop_reason: str
    missed_ticks: int
    recorder_cpu_s: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def recorder_cpu_pct(self) -> float:
        """The recorder's CPU time as a percentage of one CPU over the recording."""
        return 100 * self.recorder_cpu_s / self.duration_s if self.duration_s > 0 else 0.0


class _Writer:
    """Appends the trace's lines as they come and rewrites meta.json. Lines are collected and
    written together about once a second, each batch in one ``write``: the files only ever
    hold whole lines, so a trace can be read (``agentshim report``) while it is recorded."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self._files: dict[str, BinaryIO] = {}
        self._pending: dict[str, list[str]] = {SAMPLES: [], CALLS: [], EVENTS: []}
        for fname in (SAMPLES, CALLS):
            self._open(fname)
        self._flushed = time.monotonic()

    def _open(self, fname: str) -> BinaryIO:
        fh = self._files.get(fname)
        if fh is None:
            fh = open(self.root / fname, "ab", buffering=0)  # noqa: SIM115 (kept open)
            self._files[fname] = fh
        return fh

    def sample(self, sample: Sample) -> None:
        self._pending[SAMPLES].append(sample_line(sample))

    def call(self, call: ToolCall) -> None:
        self._pending[CALLS].append(call_line(call))

    def event(self, event: dict[str, Any]) -> None:
        self._pending[EVENTS].append(dump_line(event))

    def meta(self, meta: dict[str, Any]) -> None:
        self.flush()
        write_meta(self.root, self.name, meta)

    def maybe_flush(self, now: float) -> None:
        if now - self._flushed >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        for fname, lines in self._pending.items():
            if lines:
                data = memoryview("".join(lines).encode("utf-8"))
                lines.clear()
                fh = self._open(fname)
                while data:
                    written = fh.write(data)
                    if not written:
                        raise OSError(errno.EIO, f"short write to {self.root / fname}")
                    data = data[written:]
        self._flushed = time.monotonic()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            for fh in self._files.values():
                fh.close()


class Recorder:
    """Records one container (a :class:`Target`) into a trace directory.

    ``on_status`` is called about twice a second with a :class:`Status`; ``request_stop()``
    may be called from a signal handler.
    """

    def __init__(self, target: Target, out_dir: str | os.PathLike[str],
                 interval_s: float = DEFAULT_INTERVAL_S, duration_s: float | None = None,
                 on_status: Callable[[Status], None] | None = None,
                 exit_grace_s: float = EXIT_GRACE_S) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise RecorderError(f"bad interval {interval_s!r}: must be a positive number of s")
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise RecorderError(f"bad duration {duration_s!r}: must be a positive number of s")
        self.target = target
        self.out = Path(out_dir)
        self.interval_s = float(interval_s)
        self.duration_s = duration_s
        self.on_status = on_status
        self.exit_grace_s = exit_grace_s
        self._stop = False
        self._check_out_dir()

    def _check_out_dir(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise RecorderError(f"{self.out}: exists and is not a directory")
        taken = [n for n in (OWN_META, SAMPLES, CALLS, EVENTS) if (self.out / n).exists()]
        if taken:
            raise RecorderError(f"{self.out}: already holds a trace ({', '.join(taken)}); "
                                f"give a new directory")

    def request_stop(self) -> None:
        """Stop at the next tick (safe to call from a signal handler)."""
        self._stop = True

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> RecordResult:
        """Record until stopped; returns how it went. Raises RecorderError when the
        container's cgroup cannot be read at the start."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecorderError(f"{self.out}: cannot create: {exc.strerror or exc}") from None
        readers: dict[str, ScopeReader] = {}
        try:
            for scope, cg in self.target.scopes().items():
                readers[scope] = ScopeReader(cg)
        except CgroupError as exc:
            for r in readers.values():
                r.close()
            raise RecorderError(f"cannot read the cgroups of container "
                                f"{self.target.name or self.target.id[:12]}: {exc}") from None
        try:
            return self._record(readers)
        except OSError as exc:
            raise RecorderError(f"{self.out}: cannot write the trace: "
                                f"{exc.strerror or exc}") from None
        finally:
            for r in readers.values():
                r.close()

    def _record(self, readers: dict[str, ScopeReader]) -> RecordResult:
        name = self.out.resolve().name
        writer = _Writer(self.out, name)
        calls_tail = JsonlTail(self.target.calls_file, from_end=True)
        events_tail = JsonlTail(self.target.events_file, from_end=True)
        cpu0 = time.process_time()
        wall0 = time.time()
        mono0 = time.monotonic()
        meta: dict[str, Any] = {
            "recorder": "agentshim trace", "agentshim_version": __version__,
            "host": platform.node(), "cgroup_mode": self.target.root.layout.mode,
            "interval_s": self.interval_s, "started": round(wall0, 3), "ended": None,
            "stop_reason": None, **self.target.describe(),
        }
        if self.target.notes:
            meta["notes"] = list(self.target.notes)
        writer.meta(meta)
        prev: dict[str, ScopeReading] = {}
        state = _LogState()
        samples = missed = 0
        lateness = _Lateness()
        stop_reason = "signal"
        last_log = last_status = -math.inf
        container = readers["container"]
        tick = 0
        try:
            while True:
                if self._stop:
                    stop_reason = "signal"
                    break
                due = mono0 + tick * self.interval_s
                now = time.monotonic()
                if now < due:
                    time.sleep(due - now)
                    if self._stop:
                        stop_reason = "signal"
                        break
                lateness.add(time.monotonic() - due)
                try:
                    sample, current = self._sample(readers, prev)
                except CgroupError:
                    stop_reason = "container_exited"
                    break
                prev = current
                writer.sample(sample)
                samples += 1
                now = time.monotonic()
                if now - last_log >= LOG_POLL_S:
                    last_log = now
                    self._follow(calls_tail, events_tail, writer, state)
                    populated = container.populated()
                    if populated is None:  # no v2 tree: look for processes (slower)
                        populated = _has_procs(container.cgroup)
                    if not populated:
                        stop_reason = "container_exited"
                        break
                if self.on_status is not None and now - last_status >= LOG_POLL_S:
                    last_status = now
                    tools = sample.extra.get("tools") or {}
                    self.on_status(Status(now - mono0, samples, sample.mem_bytes,
                                          tools.get("mem_bytes"), state.calls, state.events))
                writer.maybe_flush(now)
                if self.duration_s is not None and now - mono0 >= self.duration_s:
                    stop_reason = "duration"
                    break
                # the next tick still ahead; ticks already past are skipped, not bunched
                nxt = tick + 1
                late = int((time.monotonic() - mono0) / self.interval_s) + 1
                if late > nxt:
                    missed += late - nxt
                    nxt = late
                tick = nxt
            ended = time.time()
            if stop_reason == "container_exited" and self.target.managed:
                self._wait_last_records(calls_tail, events_tail, writer, state, wall0)
            else:
                self._follow(calls_tail, events_tail, writer, state)
            for call in state.unfinished(ended):
                writer.call(call)
                state.calls += 1
            duration = max(0.0, ended - wall0)
            cpu_s = time.process_time() - cpu0
            meta.update({
                "ended": round(ended, 3), "stop_reason": stop_reason, "samples": samples,
                "missed_ticks": missed, "calls": state.calls, "events": state.events,
                "bad_log_lines": calls_tail.bad_lines + events_tail.bad_lines,
                "recorder_cpu_s": round(cpu_s, 3),
                "recorder_cpu_pct": round(100 * cpu_s / duration, 3) if duration else None,
                "recorder_us_per_sample": round(1e6 * cpu_s / samples, 1) if samples else None,
                "tick_late_ms": lateness.summary(),
            })
            writer.meta(meta)
        finally:
            calls_tail.close()
            events_tail.close()
            writer.close()
        return RecordResult(self.out, samples, state.calls, state.events, duration, stop_reason,
                            missed, cpu_s, meta)

    def _sample(self, readers: dict[str, ScopeReader],
                prev: dict[str, ScopeReading]) -> tuple[Sample, dict[str, ScopeReading]]:
        """One sample of every scope; CgroupError when the container cgroup is gone."""
        current: dict[str, ScopeReading] = {}
        t = time.time()
        main = readers["container"].read()
        current["container"] = main
        extra: dict[str, Any] = {"mem_psi": main.psi}
        for scope, reader in readers.items():
            if scope == "container":
                continue
            try:
                reading = reader.read()
            except CgroupError:
                extra[scope] = None  # a sub-cgroup removed before the container: no value
                continue
            current[scope] = reading
            extra[scope] = {"mem_bytes": reading.mem_bytes,
                            "cpu_pct": _cpu_pct(prev.get(scope), reading),
                            "mem_psi": reading.psi}
        sample = Sample(round(t, 4), main.mem_bytes, _cpu_pct(prev.get("container"), main),
                        extra)
        return sample, current

    def _follow(self, calls_tail: JsonlTail, events_tail: JsonlTail, writer: _Writer,
                state: _LogState) -> None:
        for event in filter(None, map(event_from_line, events_tail.poll())):
            writer.event(event)
            state.event(event)
        for rec in calls_tail.poll():
            call = call_from_record(rec)
            if call is not None:
                writer.call(call)
                state.record(call)

    def _wait_last_records(self, calls_tail: JsonlTail, events_tail: JsonlTail,
                           writer: _Writer, state: _LogState, started: float) -> None:
        """After the container exited: follow agentshimd's files until its summary of this
        container is written (it unregistered: every record is out) or the grace ends."""
        deadline = time.monotonic() + self.exit_grace_s
        while True:
            self._follow(calls_tail, events_tail, writer, state)
            with contextlib.suppress(OSError):
                if self.target.summary_file.stat().st_mtime >= started:
                    self._follow(calls_tail, events_tail, writer, state)
                    return
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)


def _has_procs(cg: Cgroup) -> bool:
    try:
        return cg.populated()
    except CgroupError:
        return False


class _LogState:
    """Counts, and the calls seen starting or ending in events without their record yet."""

    def __init__(self) -> None:
        self.calls = 0
        self.events = 0
        self.recorded: set[str] = set()
        self.started: dict[str, dict[str, Any]] = {}
        self.ended: dict[str, dict[str, Any]] = {}

    def record(self, call: ToolCall) -> None:
        self.calls += 1
        if call.id is not None:
            self.recorded.add(call.id)
            self.started.pop(call.id, None)
            self.ended.pop(call.id, None)

    def event(self, event: dict[str, Any]) -> None:
        self.events += 1
        seq = event.get("call")
        if seq is None or isinstance(seq, bool) or str(seq) in self.recorded:
            return
        if event["type"] == "call_start":
            self.started[str(seq)] = event
        elif event["type"] == "call_end":
            self.ended[str(seq)] = event

    def unfinished(self, end: float) -> list[ToolCall]:
        """Calls whose start was seen in the events but whose record never came: ended ones
        from their call_end event, running ones up to ``end`` (end_estimated)."""
        out: list[ToolCall] = []
        for seq, start in self.started.items():
            stop = self.ended.get(seq)
            peak = stop.get("peak_bytes") if stop else None
            extra = {k: v for k, v in start.items()
                     if k not in ("t", "type", "call", "command", "category")}
            extra["from_events"] = True
            if stop is not None:
                extra.update((k, v) for k, v in stop.items()
                             if k not in ("t", "type", "call", "peak_bytes"))
            command, category = start.get("command"), start.get("category")
            out.append(ToolCall(
                start=float(start["t"]), end=max(float(start["t"]),
                                                 float(stop["t"]) if stop else end),
                tool="Bash", command=command if isinstance(command, str) else None,
                category=category if isinstance(category, str) else None,
                peak_bytes=peak if isinstance(peak, int) and peak >= 0 else None, id=seq,
                end_estimated=stop is None, extra=extra))
        return out
