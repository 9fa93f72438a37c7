"""Unit tests of the trace model, the dataset importer, the own trace format, the report
metrics (on hand-made traces whose answers are known exactly) and the `report` command."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agentshim.cli.report import report as report_cmd
from agentshim.report import (
    MB,
    analyze,
    baseline_bytes,
    build_report,
    call_peak_bytes,
    category_stats,
    cpu_avg_pct,
    cpu_mem_corr,
    find_bursts,
    format_text,
    live_series,
    max_rise_mb_per_s,
    merged_windows,
    sample_interval,
    spread,
    startup_count,
    task_duration,
    tool_time_by_tool,
    tool_time_share,
)
from agentshim.trace import (
    Sample,
    ToolCall,
    Trace,
    TraceError,
    find_traces,
    load_dataset,
    load_trace,
    read_trace,
    write_trace,
)
from agentshim.trace.dataset import (
    IN_PROCESS_CAP_S,
    classify_command,
    estimate_ends,
    interval_cpu,
    parse_percent,
    parse_podman_size,
    parse_time,
)

T0 = 1000.0

# --------------------------------------------------------------------------- a hand-made trace
#
# 20 samples, one a second from T0. Memory in MB by sample index:
#   0: 10 (container start)   1: 180   2: 190   3-5: 200   6: 600   7: 700   8-14: 200
#   15: 900   16-17: 200   18: 250   19: 200
# Calls:
#   C1 Bash "python -m pytest tests"  1005.5-1007.5  (test)
#   C2 Read                           1011.0-1011.2
#   C4 Bash "pytest -x"               1012.6-1013.0  (test)
#   C3 Bash "git status"              1017.6-1017.8  (git)
_MEM = [10, 180, 190, 200, 200, 200, 600, 700, 200, 200, 200, 200, 200, 200, 200, 900, 200,
        200, 250, 200]


def _synthetic() -> Trace:
    samples = [Sample(T0 + i, m * MB, None if i == 0 else (25.0 if i == 7 else 5.0))
               for i, m in enumerate(_MEM)]
    calls = [
        ToolCall(T0 + 5.5, T0 + 7.5, "Bash", "python -m pytest tests"),
        ToolCall(T0 + 11.0, T0 + 11.2, "Read"),
        ToolCall(T0 + 12.6, T0 + 13.0, "Bash", "pytest -x"),
        ToolCall(T0 + 17.6, T0 + 17.8, "Bash", "git status"),
    ]
    return Trace("synthetic", samples, calls, {"path": "/x/synthetic"}).sort()


def test_sampling_duration_and_startup() -> None:
    trace = _synthetic()
    assert sample_interval(trace) == 1.0
    assert task_duration(trace) == 19.0
    # median of all samples is 200 MB: the first sample at or above 100 MB is index 1
    assert startup_count(trace) == 1


def test_tool_time_share_and_by_tool() -> None:
    trace = _synthetic()
    assert tool_time_share(trace) == pytest.approx((2.0 + 0.2 + 0.4 + 0.2) / 19.0)
    assert tool_time_by_tool(trace) == pytest.approx({"Bash": 2.6, "Read": 0.2})


def test_overlapping_calls_count_once_in_the_share() -> None:
    trace = _synthetic()
    trace.calls = [ToolCall(T0 + 2, T0 + 6, "Task"), ToolCall(T0 + 3, T0 + 4, "Bash", "ls"),
                   ToolCall(T0 + 18, T0 + 25, "Bash", "ls")]  # clipped at the last sample
    assert merged_windows((c.start, c.end) for c in trace.calls) == [
        (T0 + 2, T0 + 6), (T0 + 18, T0 + 25)]
    assert tool_time_share(trace) == pytest.approx((4.0 + 1.0) / 19.0)
    assert tool_time_by_tool(trace) == pytest.approx({"Bash": 8.0, "Task": 4.0})


def test_baseline_is_p10_of_samples_outside_calls_after_startup() -> None:
    # outside C1..C4 widened by 1 s and after the start sample: indices 1,2,3,4,9,15,16,19
    # -> 180,190,200,200,200,900,200,200 MB; P10 (linear) = 180 + 0.7 * 10 = 187
    assert baseline_bytes(_synthetic()) == pytest.approx(187 * MB)


def test_baseline_falls_back_to_all_samples_after_startup() -> None:
    trace = _synthetic()
    trace.calls = [ToolCall(T0, T0 + 19, "Task")]  # nothing is outside
    # samples 1..19 sorted: 180, 190, 200 x 14, 250, 600, 700, 900; P10 idx 1.8 -> 198
    assert baseline_bytes(trace) == pytest.approx(198 * MB)
    assert baseline_bytes(Trace("empty")) is None


def test_bursts() -> None:
    trace = _synthetic()
    bursts = find_bursts(trace, 300)  # line = 187 + 300 = 487 MB
    assert [(b.start, b.end, b.duration, b.peak_bytes, b.in_tool_call) for b in bursts] == [
        (T0 + 6, T0 + 8, 2.0, 700 * MB, True),     # starts inside C1
        (T0 + 15, T0 + 16, 1.0, 900 * MB, False),  # 1.6 s before C3: outside
    ]
    assert len(find_bursts(trace, 500)) == 2    # line 687: samples 7 and 15
    assert find_bursts(trace, 500)[0].start == T0 + 7
    assert len(find_bursts(trace, 750)) == 0    # line 937


def test_burst_at_the_end_and_window_slack() -> None:
    trace = _synthetic()
    trace.samples[-1].mem_bytes = 800 * MB
    trace.calls.append(ToolCall(T0 + 14.2, T0 + 14.5, "Edit"))  # 0.5 s before burst 2: inside
    bursts = find_bursts(trace, 300, baseline=187 * MB)
    assert [(b.start, b.duration, b.in_tool_call) for b in bursts] == [
        (T0 + 6, 2.0, True), (T0 + 15, 1.0, True), (T0 + 19, 1.0, False)]


def test_call_peaks_and_categories() -> None:
    trace = _synthetic()
    c1, _, c4, c3 = trace.calls
    assert call_peak_bytes(trace, c1) == 700 * MB   # samples 5..8 (window +- 0.5 s)
    assert call_peak_bytes(trace, c4) == 200 * MB   # sample 13
    assert call_peak_bytes(trace, c3) == 250 * MB   # sample 18
    c3.peak_bytes = 42 * MB                         # a recorder's own measurement wins
    assert call_peak_bytes(trace, c3) == 42 * MB
    c3.peak_bytes = None
    stats = category_stats(trace)
    assert list(stats) == ["test", "git"]
    assert stats["test"] == {"count": 2, "time_s": 2.4, "time_share": round(2.4 / 2.6, 4),
                             "peak_mb_p50": 450.0, "peak_mb_p95": 675.0}
    assert stats["git"] == {"count": 1, "time_s": 0.2, "time_share": round(0.2 / 2.6, 4),
                            "peak_mb_p50": 250.0, "peak_mb_p95": 250.0}


def test_call_without_nearby_sample_has_no_peak() -> None:
    trace = Trace("gap", [Sample(0, 100), Sample(1, 100), Sample(10, 100)],
                  [ToolCall(4.0, 5.0, "Bash", "ls")])
    assert call_peak_bytes(trace, trace.calls[0]) is None
    assert category_stats(trace)["file_ops"]["peak_mb_p50"] is None


def test_bash_without_command_is_unknown_and_other_tools_have_no_category() -> None:
    trace = _synthetic()
    trace.calls = [ToolCall(T0 + 1, T0 + 2, "Bash"), ToolCall(T0 + 3, T0 + 4, "Grep")]
    assert list(category_stats(trace)) == ["unknown"]


def test_max_rise_per_second_after_startup() -> None:
    assert max_rise_mb_per_s(_synthetic()) == pytest.approx(700.0)  # 200 -> 900 in 1 s
    uneven = Trace("u", [Sample(0, 0), Sample(1, 200 * MB), Sample(1.5, 300 * MB),
                         Sample(3.5, 700 * MB), Sample(4, 600 * MB)])
    # startup: sample 0 (median 300 MB, half 150); rises: 200/s over 0.5 s, 200/s over 2 s
    assert max_rise_mb_per_s(uneven) == pytest.approx(200.0)
    assert max_rise_mb_per_s(Trace("one", [Sample(0, 1)])) is None


def test_cpu_average_and_correlation() -> None:
    assert cpu_avg_pct(_synthetic()) == pytest.approx((18 * 5.0 + 25.0) / 19)
    def trace(mem: list[int], cpu: list[float | None]) -> Trace:
        return Trace("c", [Sample(i, m, c) for i, (m, c) in enumerate(zip(mem, cpu,
                                                                          strict=True))])
    assert cpu_mem_corr(trace([101, 102, 103, 104], [2, 4, 6, 8])) == pytest.approx(1.0)
    assert cpu_mem_corr(trace([101, 102, 103, 104], [8, 6, 4, 2])) == pytest.approx(-1.0)
    assert cpu_mem_corr(trace([101, 102, 103], [1, 3, 2])) == pytest.approx(0.5)
    assert cpu_mem_corr(trace([101, 102, 103, 109], [1, 3, 2, None])) == pytest.approx(0.5)
    # the start-up sample (1 < half the median memory) is left out
    assert cpu_mem_corr(trace([1, 101, 102, 103, 104], [100, 2, 4, 6, 8])) == pytest.approx(1.0)
    assert cpu_mem_corr(trace([101, 102, 103], [5, 5, 5])) is None
    assert cpu_mem_corr(trace([101, 102], [1, 2])) is None
    assert cpu_avg_pct(trace([1, 2], [None, None])) is None


def test_spread() -> None:
    assert spread([1, 2, 3, 6, None]) == {
        "n": 4, "min": 1.0, "median": 2.5, "max": 6.0, "mean": 3.0,
        "cv": round(math.sqrt(3.5) / 3, 4)}
    assert spread([None])["median"] is None
    assert spread([0, 0])["cv"] is None


def test_task_row() -> None:
    row = analyze(_synthetic()).row
    avg = sum(_MEM) / 20
    expected: dict[str, Any] = {
        "task": "synthetic", "path": "/x/synthetic", "samples": 20, "calls": 4,
        "ends_estimated": 0, "sample_interval_s": 1.0, "duration_s": 19.0, "peak_mb": 900.0,
        "avg_mb": avg, "baseline_mb": 187.0, "peak_to_avg": round(900 / avg, 3),
        "burst_count": 2, "bursts_in_tool_calls": 0.5, "burst_durations_s": [2.0, 1.0],
        "tool_time_share": round(2.8 / 19, 4), "cpu_avg_pct": round(115 / 19, 2),
        "max_rise_mb_per_s": 700.0, "tool_time_s": {"Bash": 2.6, "Read": 0.2},
    }
    for key, value in expected.items():
        assert row[key] == pytest.approx(value), key
    assert set(row["categories"]) == {"test", "git"}
    assert -1 <= row["cpu_mem_corr"] <= 1
    assert avg == 271.5


def test_report_aggregate_and_text() -> None:
    quiet = Trace("quiet", [Sample(T0 + i, 200 * MB, 1.0) for i in range(10)],
                  [ToolCall(T0 + 2, T0 + 4, "Bash", "pip install foo")])
    rep = build_report([_synthetic(), quiet], burst_mb=300)
    doc = rep.to_dict()
    assert [t["task"] for t in doc["tasks"]] == ["synthetic", "quiet"]
    agg = doc["aggregate"]
    assert agg["task_count"] == 2
    assert agg["burst_count"] == 2
    assert agg["bursts_in_tool_calls"] == 0.5
    assert agg["burst_duration_s"] == {"p50": 1.5, "p95": 1.95, "max": 2.0}
    assert agg["tool_time_share"] == pytest.approx(round((2.8 + 2.0) / (19 + 9), 4))
    assert agg["spread"]["baseline_mb"] == spread([187.0, 200.0])
    assert agg["spread"]["bursts_in_tool_calls"]["n"] == 1
    assert agg["categories"]["test"]["count"] == 2
    assert agg["categories"]["install"] == {
        "count": 1, "time_s": 2.0, "time_share": round(2.0 / 4.6, 4),
        "peak_mb_p50": 200.0, "peak_mb_p95": 200.0}
    assert agg["category_peak_p50_ratio"] == round(450 / 200, 2)
    assert agg["tool_time_s"] == {"Bash": 4.6, "Read": 0.2}
    json.dumps(doc, allow_nan=False)
    text = format_text(rep)
    assert "synthetic" in text and "quiet" in text and "bash category" in text
    assert "inside tool calls: 50.0%" in text


def test_report_of_an_empty_trace_has_nulls_not_errors() -> None:
    row = build_report([Trace("empty")]).to_dict()["tasks"][0]
    assert row["peak_mb"] is None and row["baseline_mb"] is None
    assert row["burst_count"] == 0 and row["bursts_in_tool_calls"] is None
    assert row["tool_time_share"] is None


def _live() -> Trace:
    """A hand-made live trace: 5 samples at 100 ms with framework/tools series and PSI."""
    samples = []
    for i, (fw, tools) in enumerate([(190, 0), (190, 10), (200, 400), (190, 100), (190, 0)]):
        psi = {"some_avg10": 0.0, "full_avg10": 0.0, "some_total_us": 1000 + 50_000 * i,
               "full_total_us": 500 + 10_000 * i}
        samples.append(Sample(T0 + i / 10, (fw + tools) * MB, 1.0, {
            "mem_psi": psi,
            "framework": {"mem_bytes": fw * MB, "cpu_pct": 1.0, "mem_psi": None},
            "tools": {"mem_bytes": tools * MB, "cpu_pct": None, "mem_psi": psi}}))
    calls = [ToolCall(T0 + 0.1, T0 + 0.35, "Bash", "pytest", "test", peak_bytes=420 * MB,
                      id="1")]
    events = [{"t": T0 + 0.2, "type": "throttle", "call": 1},
              {"t": T0 + 0.3, "type": "freeze", "call": 1}]
    return Trace("live", samples, calls, {"recorder_cpu_pct": 0.25}, events)


def test_live_series() -> None:
    assert live_series(_live()) == {
        "framework_avg_mb": 192.0, "framework_peak_mb": 200.0, "tools_avg_mb": 102.0,
        "tools_peak_mb": 400.0, "mem_stall_s": 0.2, "mem_full_stall_s": 0.04,
        "recorder_cpu_pct": 0.25}
    assert set(live_series(_synthetic()).values()) == {None}  # a dataset-like trace
    row = analyze(_live()).row
    assert row["tools_peak_mb"] == 400.0
    assert row["categories"]["test"]["peak_mb_p50"] == 420.0  # the call's own measured peak
    text = format_text(build_report([_live(), _synthetic()]))
    assert "live trace" in text and "framework avg MB" in text
    lines = text.splitlines()
    live_row = lines[lines.index(next(x for x in lines if x.startswith("live trace"))) + 2]
    assert live_row.split() == ["live", "192.0", "200.0", "102.0", "400.0", "0.20", "0.04",
                                "0.25"]
    assert "live trace" not in format_text(build_report([_synthetic()]))


def test_live_trace_round_trip_and_plots(tmp_path: Path) -> None:
    trace = _live()
    out = write_trace(trace, tmp_path / "live")
    first = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert list(first)[:3] == ["t", "mem_bytes", "cpu_pct"] and "framework" in first
    back = read_trace(out)
    assert back.samples == trace.samples and back.events == trace.events
    from agentshim.plots import write_plots

    written = write_plots(build_report([back]), tmp_path / "plots")
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


@pytest.mark.parametrize(("line", "message"), [
    ('{"t": 1, "mem_bytes": 5, "framework": 3}', "'framework' must be an object or null"),
    ('{"t": 1, "mem_bytes": 5, "tools": {"mem_bytes": -1}}', "'tools': 'mem_bytes' must be"),
    ('{"t": 1, "mem_bytes": 5, "tools": {"cpu_pct": "x"}}', "'tools': 'cpu_pct' must be"),
    ('{"t": 1, "mem_bytes": 5, "mem_psi": {"some_total_us": 1.5}}', "'some_total_us' must"),
    ('{"t": 1, "mem_bytes": 5, "mem_psi": []}', "'mem_psi' must be an object or null"),
])
def test_live_sample_extras_are_checked(tmp_path: Path, line: str, message: str) -> None:
    out = write_trace(_live(), tmp_path / "live")
    (out / "samples.jsonl").write_text(line + "\n")
    with pytest.raises(TraceError, match="line 1: " + message.replace("(", r"\(")):
        read_trace(out)
    (out / "samples.jsonl").write_text('{"t": 1, "mem_bytes": 5, "later": {"any": 1}}\n')
    assert read_trace(out).samples[0].extra == {"later": {"any": 1}}  # unknown keys kept


# --------------------------------------------------------------------------- importer


def test_podman_sizes_and_percentages() -> None:
    assert parse_podman_size("11.68kB") == 11_680
    assert parse_podman_size("185.5MB") == 185_500_000
    assert parse_podman_size("1.461GB") == 1_461_000_000
    assert parse_podman_size("0B") == 0
    assert parse_podman_size("512MiB") == 512 * 1024**2
    assert parse_podman_size("1.5GiB") == 1536 * 1024**2
    assert parse_podman_size("4KiB") == 4096
    assert parse_podman_size(" 2 GB ") == 2_000_000_000
    assert parse_podman_size(1234) == 1234
    for bad in ("", "MB", "12XB", "-5MB", "1.2.3MB", "1e400MB", None, True, float("inf")):
        with pytest.raises(ValueError):
            parse_podman_size(bad)  # type: ignore[arg-type]
    assert parse_percent("60.78%") == 60.78
    assert parse_percent("--") is None
    assert parse_percent(None) is None
    with pytest.raises(ValueError):
        parse_percent("lots")


def test_cumulative_cpu_becomes_interval_cpu() -> None:
    # podman --no-stream: the average since start. CPU time used: 0, 0.5, 0.8, 1.2 s
    assert interval_cpu([0, 1, 2, 3], [100, 50, 40, 40]) == (
        [100, pytest.approx(50), pytest.approx(30), pytest.approx(40)], "cumulative")
    # a rounding dip (0.8 s -> 0.7998 s) never gives negative CPU; the total is kept
    values, kind = interval_cpu([0, 1, 2, 3, 4], [100, 50, 40, 26.66, 25])
    assert kind == "cumulative"
    assert values == [100, pytest.approx(50), pytest.approx(30), 0.0, pytest.approx(20)]
    assert interval_cpu([0, 1, 2, 3], [100, None, 40, 40]) == (
        [100, None, pytest.approx(40), pytest.approx(40)], "cumulative")
    # a series that is not cumulative (CPU time would go down) is kept as it is
    assert interval_cpu([0, 1, 2, 3, 4], [10, 90, 5, 80, 5]) == ([10, 90, 5, 80, 5], "interval")
    assert interval_cpu([0, 1], [5, 6]) == ([5, 6], "interval")
    assert interval_cpu([0, 1], [None, None]) == ([None, None], "none")


def test_times() -> None:
    assert parse_time("2026-02-07T10:54:03.975Z") == pytest.approx(1770461643.975)
    assert parse_time("2026-02-07T10:54:03.975+00:00") == pytest.approx(1770461643.975)
    assert parse_time("2026-02-07T02:54:03.975-08:00") == pytest.approx(1770461643.975)
    assert parse_time("2026-02-07T10:54:03.975") == pytest.approx(1770461643.975)  # UTC
    assert parse_time(12.5) == 12.5
    with pytest.raises(ValueError):
        parse_time("yesterday")


def _write_task(root: Path, samples: list[dict[str, Any]], calls: Any,
                results: Any = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "resources.json").write_text(json.dumps({"samples": samples, "summary": {}}))
    (root / "tool_calls.json").write_text(json.dumps(calls))
    if results is not None:
        (root / "results.json").write_text(json.dumps(results))
    return root


# The sampler ran on a host at UTC-8: "timestamp" is local time, "epoch" is the truth.
_EPOCH = 1770461637.0


def _res(i: int, usage: str, cpu: str = "5.00%") -> dict[str, Any]:
    local = f"2026-02-07T02:53:{57 + i:02d}.000000"
    return {"timestamp": local, "epoch": _EPOCH + i, "mem_usage": usage,
            "mem_percent": "0.1%", "cpu_percent": cpu}


def test_import_units_times_and_new_format(tmp_path: Path) -> None:
    samples = [_res(0, "11.68kB / 134.5GB", "103.59%"), _res(1, "185.5MB / 134.5GB"),
               _res(2, "1.5GB / 134.5GB"), _res(3, "512MiB / 1GiB"), _res(2, "0B / 0B", "0%")]
    calls = [
        {"timestamp": "2026-02-07T10:53:59.500Z", "end_timestamp": "2026-02-07T10:54:00.250Z",
         "tool": "Bash", "id": "b1", "input": {"command": "python -m pytest -q",
                                                "description": "run tests"},
         "result_preview": "ok"},
        {"timestamp": "2026-02-07T10:53:58.000Z", "end_timestamp": "2026-02-07T10:53:58.020Z",
         "tool": "Read", "id": "r1", "input": {"file_path": "/x"}},
    ]
    task = _write_task(tmp_path / "task-a", samples, calls,
                       {"image": "img:1", "model": "haiku", "claude_time": 12.5,
                        "image_info": {"size_bytes": 42}, "claude_output": {"big": "x"}})
    trace = load_dataset(task)
    assert trace.name == "task-a"
    assert [s.t for s in trace.samples] == [_EPOCH, _EPOCH + 1, _EPOCH + 2, _EPOCH + 3]
    assert [s.mem_bytes for s in trace.samples] == [11_680, 185_500_000, 1_500_000_000,
                                                    512 * 1024**2]
    # cumulative CPU (103.59% at start, then 5% on average since start) -> per interval
    assert trace.meta["cpu_percent_source"] == "cumulative"
    assert [round(s.cpu_pct, 6) for s in trace.samples] == [103.59, 5.0, 5.0, 5.0]
    assert trace.meta["dropped_samples"] == 1
    assert trace.meta["mem_limit_bytes"] == 134_500_000_000
    assert trace.meta["image"] == "img:1" and trace.meta["claude_time"] == 12.5
    assert trace.meta["image_size_bytes"] == 42 and "claude_output" not in trace.meta
    read, bash = trace.calls  # sorted by start
    assert (read.tool, read.start - _EPOCH, read.command, read.category) == (
        "Read", pytest.approx(1.0), None, None)
    assert bash.start == pytest.approx(_EPOCH + 2.5) and bash.end == pytest.approx(_EPOCH + 3.25)
    assert (bash.command, bash.category, bash.id, bash.end_estimated) == (
        "python -m pytest -q", "test", "b1", False)
    assert bash.extra == {"description": "run tests"}
    assert trace.meta["ends_estimated"] == 0


def test_import_old_format_estimates_ends(tmp_path: Path) -> None:
    samples = [_res(i, "200MB / 16GB") for i in range(30)]
    iso = "2026-02-07T10:54:{:06.3f}Z".format
    calls = [  # 10:54:00 is _EPOCH + 3
        {"timestamp": iso(0.0), "tool": "Bash", "id": "1"},
        {"timestamp": iso(5.0), "tool": "Read", "id": "2"},       # parallel: same start,
        {"timestamp": iso(5.0), "tool": "Grep", "id": "3"},       # both end at the next one
        {"timestamp": iso(5.5), "tool": "Edit", "id": "4"},       # capped at 1 s
        {"timestamp": iso(8.0), "tool": "Task", "id": "5"},
        {"timestamp": iso(20.0), "tool": "Bash", "id": "6"},      # last: ends at last sample
    ]
    trace = load_dataset(_write_task(tmp_path / "old", samples, calls))
    rel = [(c.id, round(c.start - _EPOCH, 3), round(c.end - _EPOCH, 3)) for c in trace.calls]
    assert rel == [("1", 3.0, 8.0), ("2", 8.0, 8.5), ("3", 8.0, 8.5), ("4", 8.5, 9.5),
                   ("5", 11.0, 23.0), ("6", 23.0, 29.0)]
    assert all(c.end_estimated for c in trace.calls)
    assert trace.meta["ends_estimated"] == 6
    assert trace.calls[0].category is None
    assert list(category_stats(trace)) == ["unknown"]
    assert IN_PROCESS_CAP_S == 1.0


def test_estimate_ends_keeps_known_ends_and_orders() -> None:
    calls = [ToolCall(10, 10, "Bash", end_estimated=True), ToolCall(2, 3, "Bash"),
             ToolCall(4, 4, "Read", end_estimated=True)]
    assert estimate_ends(calls, trace_end=None) == 2
    assert [(c.start, c.end) for c in calls] == [(10, 10), (2, 3), (4, 5)]


def test_classification_uses_the_policy_module() -> None:
    assert classify_command("cd /testbed && python -m pytest tests/x.py -q") == "test"
    assert classify_command("pip install -e .") == "install"
    assert classify_command("git diff") == "git"
    assert classify_command("python -c 'print(1)'") == "python"
    assert classify_command("ls -la") == "file_ops"


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "malformed JSON at line 1"),
    ('{"nope": 1}', "expected an object with a 'samples' list"),
    ('{"samples": [1]}', "sample 0: expected an object"),
    ('{"samples": [{"mem_usage": "1MB / 2MB"}]}', "sample 0: no 'epoch'"),
    ('{"samples": [{"epoch": 1, "mem_usage": "lots / 2MB"}]}', "sample 0: bad size 'lots '"),
    ('{"samples": [{"epoch": 1, "mem_usage": "1MB / 2MB", "cpu_percent": "x%"}]}',
     "sample 0: bad percentage"),
    ('{"samples": [{"epoch": "soon", "mem_usage": "1MB"}]}', "sample 0: bad time"),
])
def test_malformed_resources_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    task = _write_task(tmp_path / "t", [], [])
    (task / "resources.json").write_text(content)
    with pytest.raises(TraceError) as err:
        load_dataset(task)
    assert str(task / "resources.json") in str(err.value)
    assert message in str(err.value)


@pytest.mark.parametrize(("content", "message"), [
    ("[", "malformed JSON"),
    ('{"x": 1}', "expected a list of tool calls"),
    ('[{"tool": "Bash"}]', "call 0: no 'timestamp'"),
    ('[{"timestamp": "later"}]', "call 0: bad time 'later'"),
    ('[{"timestamp": "2026-01-01T00:00:02Z", "end_timestamp": "2026-01-01T00:00:01Z"}]',
     "call 0: end_timestamp is before timestamp"),
])
def test_malformed_tool_calls_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    task = _write_task(tmp_path / "t", [_res(0, "1MB / 2MB")], [])
    (task / "tool_calls.json").write_text(content)
    with pytest.raises(TraceError) as err:
        load_dataset(task)
    assert str(task / "tool_calls.json") in str(err.value)
    assert message in str(err.value)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such trace directory"):
        load_trace(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TraceError, match="not a trace"):
        load_trace(tmp_path / "empty")
    task = _write_task(tmp_path / "t", [_res(0, "1MB / 2MB")], [])
    (task / "tool_calls.json").unlink()
    with pytest.raises(TraceError, match=r"tool_calls\.json: file not found"):
        load_trace(task)


def test_bad_results_json_is_ignored_with_a_warning(tmp_path: Path) -> None:
    task = _write_task(tmp_path / "t", [_res(0, "1MB / 2MB")], [])
    (task / "results.json").write_text("{oops")
    trace = load_dataset(task)
    assert "results.json" in trace.meta["warnings"][0]


def test_find_traces(tmp_path: Path) -> None:
    a = _write_task(tmp_path / "set" / "b-task", [_res(0, "1MB / 2MB")], [])
    b = _write_task(tmp_path / "set" / "a-task", [_res(0, "1MB / 2MB")], [])
    c = _write_task(tmp_path / "set" / "deeper" / "c-task", [_res(0, "1MB / 2MB")], [])
    (tmp_path / "set" / "not-a-task").mkdir()
    assert find_traces([tmp_path / "set"]) == [b, a, c]
    assert find_traces([a, tmp_path / "set" / "deeper"]) == [a, c]
    assert find_traces([a, tmp_path / "set", a]) == [a, b, c]
    with pytest.raises(TraceError, match="no such file"):
        find_traces([tmp_path / "nope"])
    with pytest.raises(TraceError, match="no trace directories found"):
        find_traces([tmp_path / "set" / "not-a-task"])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(TraceError, match="not a trace directory"):
        find_traces([tmp_path / "file.txt"])


# --------------------------------------------------------------------------- own format


def test_format_round_trip(tmp_path: Path) -> None:
    trace = _synthetic()
    trace.calls[0].peak_bytes = 123
    trace.calls[0].id = "x1"
    trace.calls[1].end_estimated = True
    trace.calls[2].extra = {"description": "tests", "exit": 0}
    trace.meta = {"recorder": "unit", "nested": {"a": [1, 2]}}
    trace.events = [{"t": T0 + 6.5, "type": "throttle", "call": "x1"}]
    out = write_trace(trace, tmp_path / "own")
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["format"], meta["version"], meta["name"]) == ("agentshim-trace", 1, "synthetic")
    back = read_trace(out)
    assert back.samples == trace.samples
    assert back.calls == trace.calls
    assert back.events == trace.events
    assert back.name == "synthetic"
    assert back.meta == {**trace.meta, "source_format": "agentshim-trace", "path": str(out)}
    assert load_trace(out).calls == trace.calls  # detection picks the own format
    assert analyze(back).row["baseline_mb"] == 187.0


def test_import_then_save_keeps_everything(tmp_path: Path) -> None:
    task = _write_task(tmp_path / "ds", [_res(i, "100MB / 1GB") for i in range(3)],
                       [{"timestamp": "2026-02-07T10:53:58Z", "tool": "Bash", "id": "1"}])
    trace = load_trace(task)
    again = load_trace(write_trace(trace, tmp_path / "own"))
    assert again.samples == trace.samples and again.calls == trace.calls
    assert again.meta["ends_estimated"] == 1
    assert again.meta["source_format"] == "dataset"  # provenance kept
    assert again.meta["path"] == str(tmp_path / "own")  # where it was read from


@pytest.mark.parametrize(("name", "content", "message"), [
    ("meta.json", '{"format": "other"}', "not an agentshim trace"),
    ("meta.json", '{"format": "agentshim-trace", "version": 2}', "version 2 is newer"),
    ("meta.json", '{"format": "agentshim-trace", "version": "1"}', 'bad "version"'),
    ("meta.json", "{", "malformed JSON"),
    ("samples.jsonl", '{"t": 1, "mem_bytes": 5}\n{"t": 2}\n', "line 2: 'mem_bytes'"),
    ("samples.jsonl", "[1]\n", "line 1: expected a JSON object"),
    ("samples.jsonl", '{"t": NaN, "mem_bytes": 1}\n', "line 1: 't' must be a finite number"),
    ("calls.jsonl", '{"start": 2, "end": 1, "tool": "Bash"}\n', "'end' is before 'start'"),
    ("calls.jsonl", '{"start": 1, "end": 2}\n', "'tool' must be a string"),
    ("events.jsonl", '{"type": "x"}\n', "'t' must be a finite number"),
])
def test_own_format_errors_name_the_file(tmp_path: Path, name: str, content: str,
                                         message: str) -> None:
    out = write_trace(_synthetic(), tmp_path / "own")
    (out / name).write_text(content)
    with pytest.raises(TraceError) as err:
        load_trace(out)
    assert str(out / name) in str(err.value)
    assert message in str(err.value)


def test_own_format_missing_samples_file(tmp_path: Path) -> None:
    out = write_trace(_synthetic(), tmp_path / "own")
    (out / "samples.jsonl").unlink()
    with pytest.raises(TraceError, match=r"samples\.jsonl: file not found"):
        load_trace(out)


# --------------------------------------------------------------------------- the command


def _two_tasks(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    mems = ["200MB / 16GB"] * 5 + ["900MB / 16GB"] + ["200MB / 16GB"] * 6
    _write_task(root / "task-1", [_res(i, m) for i, m in enumerate(mems)], [
        {"timestamp": "2026-02-07T10:54:01Z", "end_timestamp": "2026-02-07T10:54:04Z",
         "tool": "Bash", "id": "1", "input": {"command": "pytest"}}])
    write_trace(_synthetic(), root / "task-2")
    return root


def _runner() -> CliRunner:
    """A runner keeping stderr apart from stdout (click 8.2 always does)."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def test_command_text_json_and_plots(tmp_path: Path) -> None:
    root = _two_tasks(tmp_path)
    runner = _runner()
    text = runner.invoke(report_cmd, [str(root)])
    assert text.exit_code == 0, text.output
    assert "task-1" in text.output and "synthetic" in text.output
    res = runner.invoke(report_cmd, [str(root), "--json", "--burst-mb", "500"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [t["task"] for t in doc["tasks"]] == ["task-1", "synthetic"]
    t1 = doc["tasks"][0]
    for key in ("duration_s", "peak_mb", "avg_mb", "baseline_mb", "peak_to_avg", "burst_count",
                "bursts_in_tool_calls", "tool_time_share", "cpu_avg_pct", "cpu_mem_corr",
                "max_rise_mb_per_s", "categories", "tool_time_s"):
        assert key in t1
    assert (t1["peak_mb"], t1["baseline_mb"], t1["burst_count"]) == (900.0, 200.0, 1)
    assert t1["bursts_in_tool_calls"] == 1.0
    assert doc["aggregate"]["burst_mb"] == 500
    plots = tmp_path / "plots"
    res = runner.invoke(report_cmd, [str(root), "--json", "--plots", str(plots)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["aggregate"]["task_count"] == 2
    assert "wrote 5 plot(s)" in res.stderr
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["category-peaks.png", "cdf-burst-duration.png", "cdf-peak-to-avg.png",
                     "memory-synthetic.png", "memory-task-1.png"]
    assert all((plots / n).read_bytes().startswith(b"\x89PNG") for n in names)


def test_command_errors_without_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(report_cmd, [str(tmp_path / "missing")])
    assert res.exit_code == 1
    assert "Error:" in res.output and "missing" in res.output and "Traceback" not in res.output
    task = _write_task(tmp_path / "bad", [_res(0, "1MB / 2MB")], [])
    (task / "resources.json").write_text('{"samples": [{"epoch": 1, "mem_usage": "?"}]}')
    res = runner.invoke(report_cmd, [str(task)])
    assert res.exit_code == 1
    assert f"Error: {task / 'resources.json'}: sample 0: bad size" in res.output
    for bad in ("0", "-1", "inf", "nan", "1e400", "lots"):
        res = runner.invoke(report_cmd, [str(tmp_path), "--burst-mb", bad])
        assert res.exit_code == 2, (bad, res.output)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    good = _two_tasks(tmp_path / "g")
    res = runner.invoke(report_cmd, [str(good), "--plots", str(blocker / "sub")])
    assert res.exit_code == 1 and "cannot write plots" in res.output
