"""The live recorder: its logic on fixture cgroup trees (values changed while it records,
agentshimd's files appended to, the container's end), container lookup, the command's errors,
and the sampler on real cgroups with a real process allocating memory (host: hybrid; VM: v2)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agentshim.cgroups import (
    Cgroup,
    ContainerTree,
    Layout,
    MemoryLimits,
    TreeBudget,
)
from agentshim.cli.trace import trace as trace_cmd
from agentshim.report import analyze
from agentshim.trace import load_trace, read_trace
from agentshim.trace.daemon_log import JsonlTail, call_from_record, event_from_line
from agentshim.trace.recorder import (
    Recorder,
    RecorderError,
    RecordResult,
    Status,
    _Lateness,
)
from agentshim.trace.target import Target, TargetError, find_target, target_from_cgroup
from agentshim.units import MB

CID = "c0ffee" + "0" * 58
#: the module (agentshim.cli's attribute of that name is the click command)
CLI_MODULE = sys.modules["agentshim.cli.trace"]

# --------------------------------------------------------------------------- fixture trees


class FakeTree:
    """A hybrid-layout fixture: memory/cpuacct/freezer v1 dirs plus a v2 tree, with the files
    the recorder reads. Values are rewritten in place (fixed width), as cgroupfs would show
    new values through a file kept open."""

    SCOPES = ("", "framework", "tools")

    def __init__(self, root: Path, managed: bool = True) -> None:
        self.layout = Layout(mode="hybrid", unified=root / "unified",
                             v1={"memory": root / "memory", "cpuacct": root / "cpuacct",
                                 "freezer": root / "freezer"})
        self.cg = Cgroup.at(self.layout, "libpod_parent/libpod-x")
        for scope in self.SCOPES if managed else ("",):
            cg = self.cg if not scope else self.cg.child(scope)
            for d in cg.dirs.values():
                d.mkdir(parents=True, exist_ok=True)
            self.set(scope, mem=0, cpu_ns=0)
            (cg.dirs["unified"] / "memory.pressure").write_text(
                "some avg10=1.50 avg60=0.00 avg300=0.00 total=1234\n"
                "full avg10=0.25 avg60=0.00 avg300=0.00 total=99\n")
        self.populated(True)

    def _dirs(self, scope: str) -> dict[str, Path]:
        return (self.cg if not scope else self.cg.child(scope)).dirs

    @staticmethod
    def _put(path: Path, text: str) -> None:
        if not path.exists():
            path.write_text("")
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, text.encode(), 0)
        finally:
            os.close(fd)

    def set(self, scope: str, mem: int | None = None, cpu_ns: int | None = None) -> None:
        dirs = self._dirs(scope)
        if mem is not None:
            self._put(dirs["memory"] / "memory.usage_in_bytes", f"{mem:>20}\n")
        if cpu_ns is not None:
            self._put(dirs["cpuacct"] / "cpuacct.usage", f"{cpu_ns:>24}\n")

    def populated(self, on: bool) -> None:
        self._put(self.cg.dirs["unified"] / "cgroup.events",
                  f"populated {1 if on else 0}\nfrozen 0\n")


@pytest.fixture
def tree(tmp_path: Path) -> FakeTree:
    return FakeTree(tmp_path / "cg")


def _target(tree: FakeTree, state: Path) -> Target:
    return target_from_cgroup(CID, tree.cg, state, name="ctr")


def _append(path: Path, *objs: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for obj in objs:
            fh.write(json.dumps(obj) + "\n")


def _record_in_thread(recorder: Recorder) -> tuple[threading.Thread, dict[str, RecordResult]]:
    out: dict[str, RecordResult] = {}
    th = threading.Thread(target=lambda: out.update(result=recorder.run()), daemon=True)
    th.start()
    return th, out


def _wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] \
        if path.exists() else []


def test_records_series_calls_and_events_until_stopped(tree: FakeTree, tmp_path: Path) -> None:
    state = tmp_path / "state"
    calls_file = state / "calls" / f"{CID}.jsonl"
    # a record written before the recording started is not part of it
    _append(calls_file, {"call": 1, "start": 1.0, "duration_s": 1.0, "command": "old"})
    statuses: list[Status] = []
    out = tmp_path / "trace"
    tree.set("", mem=200 * MB, cpu_ns=0)
    tree.set("framework", mem=190 * MB)
    tree.set("tools", mem=10 * MB)
    recorder = Recorder(_target(tree, state), out, interval_s=0.05, on_status=statuses.append)
    th, res = _record_in_thread(recorder)
    _wait_for(lambda: len(_lines(out / "samples.jsonl")) >= 3)
    t_call = time.time()
    tree.set("", mem=700 * MB, cpu_ns=10**9)  # +1 s of CPU
    tree.set("tools", mem=510 * MB)
    # the events log appears while recording (agentshimd created it late)
    events_file = state / "events" / f"{CID}.jsonl"
    _append(events_file,
            {"v": 1, "ts": t_call, "container": CID, "call": 2, "action": "call_start",
             "command": "pytest -q", "category": "test", "grant_bytes": 1 << 30,
             "priority": "normal", "source": "wrapper"},
            {"v": 1, "ts": t_call + 0.05, "container": CID, "call": 2, "action": "throttle",
             "usage_bytes": 5, "grant_bytes": 6, "source": "bpf"},
            {"v": 1, "ts": t_call, "container": CID, "call": 3, "action": "call_start",
             "command": "sleep 100", "category": "other", "source": "wrapper"})
    time.sleep(0.3)
    tree.set("", mem=200 * MB)
    tree.set("tools", mem=10 * MB)
    # the record of call 2 arrives in two writes (a reader must wait for the newline)
    rec = json.dumps({"container": CID, "call": 2, "command": "pytest -q", "category": "test",
                      "start": t_call, "duration_s": 0.4, "exit": 0, "end": "reported",
                      "peak_bytes": 505 * MB, "cpu_us": 10, "grant_bytes": 1 << 30})
    calls_file.parent.mkdir(parents=True, exist_ok=True)
    with calls_file.open("a") as fh:
        fh.write(rec[:20])
        fh.flush()
        time.sleep(0.6)
        fh.write(rec[20:] + "\n")
    _wait_for(lambda: any(s.calls for s in statuses))
    time.sleep(0.2)
    mid = read_trace(out)  # readable while it is recorded: whole lines only, meta first
    assert mid.meta["ended"] is None and len(mid.samples) >= 3
    recorder.request_stop()
    th.join(10)
    result = res["result"]
    assert result.stop_reason == "signal"
    assert result.calls == 2 and result.events == 3  # call 2 (record), call 3 (running)
    trace = read_trace(out)
    assert trace.name == "trace"
    meta = trace.meta
    assert meta["container_id"] == CID and meta["managed"] is True
    assert meta["ended"] >= meta["started"] and meta["stop_reason"] == "signal"
    assert meta["samples"] == len(trace.samples) == result.samples
    assert meta["recorder_cpu_s"] >= 0 and "tick_late_ms" in meta
    mems = [s.mem_bytes for s in trace.samples]
    assert mems[0] == 200 * MB and max(mems) == 700 * MB and mems[-1] == 200 * MB
    tools = [s.extra["tools"]["mem_bytes"] for s in trace.samples]
    assert max(tools) == 510 * MB
    assert all(s.extra["framework"]["mem_bytes"] == 190 * MB for s in trace.samples)
    assert trace.samples[0].extra["mem_psi"] == {
        "some_avg10": 1.5, "full_avg10": 0.25, "some_total_us": 1234, "full_total_us": 99}
    assert trace.samples[0].cpu_pct is None  # no previous reading
    cpus = [s.cpu_pct for s in trace.samples[1:]]
    assert max(c for c in cpus if c is not None) > 100  # 1 s of CPU within one 50 ms tick
    by_id = {c.id: c for c in trace.calls}
    assert set(by_id) == {"2", "3"}
    c2 = by_id["2"]
    assert (c2.tool, c2.command, c2.category, c2.peak_bytes) == ("Bash", "pytest -q", "test",
                                                                 505 * MB)
    assert c2.end == pytest.approx(t_call + 0.4) and not c2.end_estimated
    assert c2.extra["exit"] == 0 and c2.extra["grant_bytes"] == 1 << 30
    c3 = by_id["3"]  # still running at the end: from its call_start event, end estimated
    assert c3.end_estimated and c3.end == pytest.approx(meta["ended"], abs=0.01)
    assert c3.command == "sleep 100" and c3.extra["from_events"] is True
    assert [e["type"] for e in trace.events] == ["call_start", "throttle", "call_start"]
    assert trace.events[1] == {"t": t_call + 0.05, "type": "throttle", "call": 2,
                               "usage_bytes": 5, "grant_bytes": 6, "source": "bpf"}
    assert statuses and statuses[-1].mem_bytes == 200 * MB
    assert statuses[-1].tools_mem_bytes == 10 * MB
    row = analyze(load_trace(out)).row
    assert row["peak_mb"] == 700.0 and row["categories"]["test"]["peak_mb_p50"] == 505.0


def test_stops_when_the_container_is_empty_and_waits_for_the_last_records(
        tree: FakeTree, tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = tmp_path / "t"
    recorder = Recorder(_target(tree, state), out, interval_s=0.05, exit_grace_s=5.0)
    th, res = _record_in_thread(recorder)
    _wait_for(lambda: len(_lines(out / "samples.jsonl")) >= 2)
    start = time.time()
    tree.populated(False)

    def daemon_finishes() -> None:  # agentshimd writes the last record, then the summary
        time.sleep(0.8)
        _append(state / "calls" / f"{CID}.jsonl",
                {"call": 7, "start": start - 1, "duration_s": 1.0, "end": "container_stopped",
                 "command": "make", "category": "build", "peak_bytes": 5})
        (state / "summaries").mkdir(parents=True)
        (state / "summaries" / f"{CID}.json").write_text("{}")

    threading.Thread(target=daemon_finishes, daemon=True).start()
    th.join(10)
    result = res["result"]
    assert result.stop_reason == "container_exited"
    assert time.time() - start < 4.0  # the summary ended the wait, not the 5 s grace
    assert [c.id for c in read_trace(out).calls] == ["7"]


def test_duration_and_cadence(tree: FakeTree, tmp_path: Path) -> None:
    out = tmp_path / "t"
    t0 = time.monotonic()
    result = Recorder(_target(tree, tmp_path / "state"), out, interval_s=0.05,
                      duration_s=1.0).run()
    took = time.monotonic() - t0
    assert result.stop_reason == "duration"
    assert 0.95 <= took < 3.0
    # ticks at 0, 50, ..., 1000 ms: 21, fewer only if ticks were skipped (counted as missed)
    assert result.samples + result.missed_ticks in (20, 21, 22)
    assert result.samples >= 15
    gaps = [b.t - a.t for a, b in zip(read_trace(out).samples, read_trace(out).samples[1:],
                                      strict=False)]
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.05, abs=0.01)


def test_container_gone_stops_the_recording(tmp_path: Path) -> None:
    tree = FakeTree(tmp_path / "cg", managed=False)
    target = _target(tree, tmp_path / "state")
    assert not target.managed and set(target.scopes()) == {"container"}
    recorder = Recorder(target, tmp_path / "t", interval_s=0.05)
    th, res = _record_in_thread(recorder)
    _wait_for(lambda: len(_lines(tmp_path / "t" / "samples.jsonl")) >= 2)
    # an unreadable memory file: what reading a removed cgroup gives
    (tree.cg.dirs["memory"] / "memory.usage_in_bytes").write_text("")
    th.join(10)
    assert res["result"].stop_reason == "container_exited"
    trace = read_trace(tmp_path / "t")
    assert "framework" not in trace.samples[0].extra  # unmanaged: container series only
    assert trace.meta["managed"] is False


def test_tick_lateness_histogram() -> None:
    late = _Lateness()
    assert late.summary() == {"p50": 0.0, "p99": 0.0, "max": 0.0}
    for ms in [0.05] * 90 + [3.0] * 9 + [2500.0]:  # beyond the last bucket: overflow
        late.add(ms / 1000)
    assert late.summary() == {"p50": 0.1, "p99": 3.1, "max": 2500.0}
    assert late.quantile(1.0) == 2500.0


def test_output_directory_must_not_hold_a_trace(tree: FakeTree, tmp_path: Path) -> None:
    out = tmp_path / "t"
    Recorder(_target(tree, tmp_path / "s"), out, duration_s=0.05).run()
    with pytest.raises(RecorderError, match="already holds a trace"):
        Recorder(_target(tree, tmp_path / "s"), out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RecorderError, match="not a directory"):
        Recorder(_target(tree, tmp_path / "s"), tmp_path / "file")
    with pytest.raises(RecorderError, match="bad interval"):
        Recorder(_target(tree, tmp_path / "s"), tmp_path / "u", interval_s=0)


def test_unreadable_cgroup_is_a_clear_error(tmp_path: Path) -> None:
    tree = FakeTree(tmp_path / "cg")
    (tree.cg.dirs["memory"] / "memory.usage_in_bytes").unlink()
    with pytest.raises(RecorderError, match="cannot read the cgroups of container ctr"):
        Recorder(_target(tree, tmp_path / "s"), tmp_path / "t").run()


# --------------------------------------------------------------------------- agentshimd files


def test_tail_follows_appends_partial_lines_truncation_and_replacement(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    tail = JsonlTail(path, from_end=True)
    assert tail.poll() == [] and not tail.exists  # absent: read from its start once it appears
    _append(path, {"a": 1})
    assert tail.poll() == [{"a": 1}]
    with path.open("a") as fh:
        fh.write('{"b": 2}\n{"c"')
    assert tail.poll() == [{"b": 2}]
    with path.open("a") as fh:
        fh.write(': 3}\nnot json\n[1]\n')
    assert tail.poll() == [{"c": 3}] and tail.bad_lines == 2
    path.write_text('{"d": 4}\n')  # truncated and rewritten
    assert tail.poll() == [{"d": 4}]
    new = tmp_path / "new.jsonl"
    new.write_text('{"e": 5}\n')
    os.replace(new, path)  # replaced by a new file
    assert tail.poll() == [{"e": 5}]
    tail.close()
    old = JsonlTail(path, from_end=True)  # lines already there are skipped
    _append(path, {"f": 6})
    assert old.poll() == [{"f": 6}]
    old.close()


def test_record_and_event_conversion() -> None:
    call = call_from_record({"container": CID, "call": 4, "command": "ls", "category":
                             "file_ops", "start": 10.0, "duration_s": 2.5, "peak_bytes": 7,
                             "exit": 1, "end": "reported", "lingering": False})
    assert call is not None
    assert (call.start, call.end, call.id, call.peak_bytes) == (10.0, 12.5, "4", 7)
    assert call.extra == {"exit": 1, "end": "reported", "lingering": False}
    assert call_from_record({"call": 1}) is None
    assert call_from_record({"start": 1, "duration_s": None, "peak_bytes": -1}).end == 1
    assert event_from_line({"v": 1, "ts": 5, "action": "oom", "call": 2, "container": CID}) \
        == {"t": 5, "type": "oom", "call": 2}
    assert event_from_line({"ts": "x", "action": "oom"}) is None
    assert event_from_line({"ts": 1.0}) is None


# --------------------------------------------------------------------------- lookup and CLI


def _podman(answers: dict[str, tuple[int, str, str]]) -> Callable[..., tuple[int, str, str]]:
    def run(args: list[str]) -> tuple[int, str, str]:
        return answers.get(args[-1], (125, "", f"Error: no such container {args[-1]}"))
    return run


def test_find_target(tree: FakeTree, tmp_path: Path) -> None:
    state = tmp_path / "state"
    run = _podman({
        "ctr": (0, json.dumps([{"Id": CID, "Name": "ctr", "State": {"Status": "running",
                                                                      "Pid": 1}}]), ""),
        "stopped": (0, json.dumps([{"Id": CID, "Name": "stopped",
                                    "State": {"Status": "exited", "Pid": 0}}]), ""),
    })
    with pytest.raises(TargetError, match="unknown container 'nope'"):
        find_target("nope", state, tree.layout, run)
    with pytest.raises(TargetError, match="container stopped is not running .state: exited"):
        find_target("stopped", state, tree.layout, run)
    # the prestart record names the cgroup (as the hooks write it)
    (state / "hooks").mkdir(parents=True)
    (state / "hooks" / f"{CID}.json").write_text(json.dumps(
        {"slot": "s", "cgroup": {k: str(v) for k, v in tree.cg.dirs.items()}}))
    target = find_target("ctr", state, tree.layout, run)
    assert target.root == tree.cg and target.managed and target.name == "ctr"
    assert target.calls_file == state / "calls" / f"{CID}.jsonl"
    assert target.notes == ()
    # a full id with a prestart record needs no podman at all
    by_id = find_target(CID, state, tree.layout, _podman({}))
    assert by_id.root == tree.cg and by_id.name is None
    tree.populated(False)
    with pytest.raises(TargetError, match="is not running .its cgroup .* holds no process"):
        find_target(CID, state, tree.layout, _podman({}))


def test_find_target_without_record_uses_the_pid(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """No prestart record: the cgroup comes from the container's pid, stepping out of
    framework/ (this test process stands in for the container's agent)."""
    cg_root = tmp_path / "cg"
    layout = Layout(mode="hybrid", unified=cg_root / "unified",
                    v1={"memory": cg_root / "memory", "cpuacct": cg_root / "cpuacct"})
    own = Cgroup.of_pid(layout, os.getpid())
    for d in own.dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    (own.dirs["unified"] / "cgroup.events").write_text("populated 1\n")
    run = _podman({"ctr": (0, json.dumps([{"Id": CID, "Name": "ctr", "State": {
        "Status": "running", "Pid": os.getpid()}}]), "")})
    target = find_target("ctr", tmp_path / "state", layout, run)
    assert target.root == own and not target.managed
    assert "not managed by agentshim" in target.notes[0]
    # a managed container's pid sits in framework/: the container is its parent
    fw = own.child("framework")
    for d in [*fw.dirs.values(), *own.child("tools").dirs.values()]:
        d.mkdir()
    monkeypatch.setattr(Cgroup, "of_pid", classmethod(lambda cls, lay, pid, proc=None: fw))
    target = find_target("ctr", tmp_path / "state", layout, run)
    assert target.root == own and target.managed
    assert "no prestart record" in target.notes[0]


def test_command_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner = CliRunner()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    res = runner.invoke(trace_cmd, ["ctr", "-o", str(tmp_path / "t")])
    assert res.exit_code == 1 and "must run as root" in res.output
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    for opt, bad in (("--interval", "0"), ("--interval", "soon"), ("--duration", "-1s")):
        res = runner.invoke(trace_cmd, ["ctr", "-o", str(tmp_path / "t"), opt, bad])
        assert res.exit_code == 2, (opt, bad, res.output)

    def unknown(container: str) -> Target:
        raise TargetError(f"unknown container {container!r} (podman: no such container)")

    monkeypatch.setattr(CLI_MODULE, "find_target", unknown)
    res = runner.invoke(trace_cmd, ["nope", "-o", str(tmp_path / "t")])
    assert res.exit_code == 1 and "Error: unknown container 'nope'" in res.output
    assert "Traceback" not in res.output


def test_command_records_until_the_duration(monkeypatch: pytest.MonkeyPatch, tree: FakeTree,
                                            tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(CLI_MODULE, "find_target", lambda c: _target(tree, tmp_path / "state"))
    res = CliRunner().invoke(trace_cmd, ["ctr", "-o", str(tmp_path / "t"), "--interval",
                                         "50ms", "--duration", "0.3s"])
    assert res.exit_code == 0, res.output
    assert "duration reached" in res.output and "recorder CPU" in res.output
    assert 4 <= len(read_trace(tmp_path / "t").samples) <= 8


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_status_line_on_a_tty(monkeypatch: pytest.MonkeyPatch, tree: FakeTree,
                                   tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(CLI_MODULE, "find_target", lambda c: _target(tree, tmp_path / "state"))
    tree.set("", mem=215_300_000)
    tree.set("tools", mem=20_100_000)
    fake = _Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    assert trace_cmd.callback is not None
    trace_cmd.callback(container="ctr", out_dir=tmp_path / "t", interval=0.05, duration=1.2)
    text = fake.getvalue()
    assert "\r\x1b[K" in text
    status = text.split("\r\x1b[K")[1]
    assert status.startswith("trace ctr:") and "samples  mem 215.3 MB (tools 20.1 MB)" in status
    assert "0 call(s)" in status
    assert text.count("\r\x1b[K") >= 3  # refreshed about twice a second, then cleared
    # the status line is cleared before the closing summary
    assert text.split("\r\x1b[K")[-1].startswith("agentshim trace: duration reached")


# --------------------------------------------------------------------------- real cgroups


def _record_real_allocation(scratch: Cgroup, workload: Callable[..., Any],
                            tmp_path: Path) -> None:
    """A real container-like tree: a framework process, a tool call allocating 200 MB for
    about a second; the recorder follows it at 100 ms and stops by itself when the tree
    empties."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        scratch.move(holder.pid)
        tree = ContainerTree(scratch)
        tree.build(TreeBudget())
        hog = workload("alloc", "--mb", "200", "--hold", "1.0")
        tree.create_call(1, MemoryLimits(), pid=hog.pid)
        out = tmp_path / "real"
        recorder = Recorder(target_from_cgroup(CID, scratch, tmp_path / "state"), out,
                            exit_grace_s=0.3)  # no agentshimd here: no last records
        th, res = _record_in_thread(recorder)
        time.sleep(0.6)
        t_go = time.time()
        hog.go()
        assert hog.wait(60) == 0
        t_done = time.time()
        time.sleep(0.4)
        holder.kill()
        holder.wait(10)
        th.join(15)
        assert not th.is_alive(), "the recorder did not stop when the cgroup emptied"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    result = res["result"]
    assert result.stop_reason == "container_exited"
    trace = read_trace(out)
    samples = trace.samples
    duration = samples[-1].t - samples[0].t
    # steady cadence: about one sample per 100 ms (not a strict timing assert)
    assert len(samples) >= 0.7 * duration / 0.1, (len(samples), duration)
    during = [s for s in samples if t_go <= s.t <= t_done]
    before = [s for s in samples if s.t < t_go]
    assert before and during
    base = min(s.mem_bytes for s in before)
    assert max(s.mem_bytes for s in during) - base >= 190 * 2**20
    tools = [s.extra["tools"]["mem_bytes"] for s in during if s.extra.get("tools")]
    assert max(tools) >= 200 * 2**20
    assert max(s.extra["tools"]["cpu_pct"] or 0 for s in during) > 5  # the call ran
    assert all(s.extra["framework"]["mem_bytes"] < 100 * MB for s in samples
               if s.extra.get("framework"))
    assert max(s.mem_bytes for s in samples if s.t > t_done + 0.3) - base < 50 * MB
    assert result.meta["recorder_cpu_pct"] is not None


def test_records_a_real_allocation(hybrid: Layout, scratch: Cgroup,
                                   workload: Callable[..., Any], tmp_path: Path) -> None:
    _record_real_allocation(scratch, workload, tmp_path)


@pytest.mark.v2
def test_records_a_real_allocation_v2(v2: Layout, scratch: Cgroup,
                                      workload: Callable[..., Any], tmp_path: Path) -> None:
    _record_real_allocation(scratch, workload, tmp_path)


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = threading.active_count()
    yield
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
