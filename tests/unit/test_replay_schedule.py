"""Trace-to-schedule conversion and the schedule model, on hand-made traces."""

from __future__ import annotations

import json

import pytest

from agentshim.replay.convert import ConvertError, to_schedule
from agentshim.replay.gendemo import generate
from agentshim.replay.schedule import BASH, INTERNAL, Call, Schedule
from agentshim.replay.tenant import intent_of
from agentshim.trace.model import Sample, ToolCall, Trace
from agentshim.units import MB

T0 = 1_700_000_000.0


def trace(mem_mb: list[float], calls: list[ToolCall], dt: float = 1.0,
          cpu: float | None = None) -> Trace:
    samples = [Sample(T0 + i * dt, int(m * MB), cpu) for i, m in enumerate(mem_mb)]
    return Trace("t", samples=samples, calls=calls).sort()


def bash(start: float, end: float, cmd: str = "pytest -x") -> ToolCall:
    return ToolCall(T0 + start, T0 + end, "Bash", command=cmd)


def test_baseline_and_a_burst_inside_a_call():
    # 200 MB agent; a test call from 10 s to 13 s holding 500 then 1200 MB more
    mem = [200] * 10 + [700, 1400, 1400, 200] + [200] * 10
    s = to_schedule(trace(mem, [bash(10, 13)]))
    assert s.baseline_bytes == 200 * MB
    assert s.duration == pytest.approx(23.0)
    (c,) = s.calls
    assert (c.start, c.duration, c.kind, c.label) == (10.0, 3.0, BASH, "test")
    assert c.profile == [(0.0, 500 * MB), (1.0, 1200 * MB)]
    assert c.peak_bytes == 1200 * MB
    assert s.demand_at(11.5) == 1400 * MB and s.demand_at(5) == 200 * MB
    assert s.demand_at(13.5) == 200 * MB  # freed at the call's end
    peak, avg = s.demand_stats()
    assert peak == 1400 * MB
    assert avg == pytest.approx((23 * 200 + 500 + 2 * 1200) * MB / 23)


def test_speed_and_memory_scale():
    mem = [200] * 10 + [700, 1400, 1400, 200] + [200] * 10
    s = to_schedule(trace(mem, [bash(10, 13)]), speed=4, mem_scale=0.5)
    (c,) = s.calls
    assert (c.start, c.duration) == (2.5, 0.75)
    assert c.profile == [(0.0, 250 * MB), (0.25, 600 * MB)]
    assert s.baseline_bytes == 100 * MB and s.duration == pytest.approx(23 / 4)


def test_memory_outside_calls_is_the_agents_own():
    mem = [200] * 5 + [260] * 5 + [200] * 5
    s = to_schedule(trace(mem, []))
    assert s.framework_at(2) == 200 * MB and s.framework_at(7) == 260 * MB
    assert s.framework_at(12) == 200 * MB
    assert s.peak_bytes == 260 * MB


def test_a_sample_just_after_the_end_belongs_to_the_call():
    # podman stats and the tool-call log are two clocks: the burst sample lands 0.5 s late
    mem = [200] * 10 + [200, 900, 200] + [200] * 5
    s = to_schedule(trace(mem, [bash(9.6, 10.5)]))
    (c,) = s.calls
    assert c.peak_bytes == 700 * MB
    assert all(o < c.duration for o, _ in c.profile)
    assert s.framework_at(11) == 200 * MB


def test_overlapping_calls_do_not_count_memory_twice():
    # a long internal Task call with a bash call inside: each sample belongs to one call
    mem = [200] * 3 + [300, 300, 800, 800, 300, 300] + [200] * 3
    calls = [ToolCall(T0 + 3, T0 + 9, "Task"), bash(5, 7)]
    s = to_schedule(trace(mem, calls))
    task, test = s.calls
    assert task.kind == INTERNAL and test.kind == BASH
    peak, _ = s.demand_stats()
    assert peak == 800 * MB
    assert s.demand_at(5.5) == 800 * MB and s.demand_at(3.5) == 300 * MB
    assert [len(b) for b in s.batches()] == [2]


def test_batches_group_overlapping_calls_only():
    s = Schedule("x", 10, 0, calls=[Call(0, 1, 1), Call(1, 1.5, 1), Call(2, 5, 1)])
    assert [[c.index for c in b] for b in s.batches()] == [[0, 1], [2]]


def test_cpu_is_the_calls_share_of_a_core():
    mem = [200] * 10
    s = to_schedule(trace(mem, [bash(2, 5)], cpu=40.0))
    assert s.calls[0].cpu == pytest.approx(0.4)
    s = to_schedule(trace(mem, [bash(2, 5)], cpu=250.0))
    assert s.calls[0].cpu == 1.0


def test_max_duration_cuts_the_trace():
    mem = [200] * 100
    s = to_schedule(trace(mem, [bash(10, 12), bash(80, 82)]), max_duration=50)
    assert s.duration == pytest.approx(50) and len(s.calls) == 1


def test_bad_input_is_refused():
    with pytest.raises(ConvertError, match="fewer than 2"):
        to_schedule(trace([200], []))
    with pytest.raises(ConvertError, match="speed"):
        to_schedule(trace([200, 200], []), speed=0)
    with pytest.raises(ConvertError, match="scale"):
        to_schedule(trace([200, 200], []), mem_scale=float("nan"))


def test_json_round_trip(tmp_path):
    mem = [200] * 10 + [700, 1400, 1400, 200] + [200] * 10
    s = to_schedule(trace(mem, [bash(10, 13)]))
    s.save(tmp_path / "s.json")
    back = Schedule.load(tmp_path / "s.json")
    assert back.to_json() == s.to_json()
    assert json.loads((tmp_path / "s.json").read_text())["calls"][0]["label"] == "test"


def test_intent_declares_a_margin_over_the_peak():
    c = Call(0, 0, 1, profile=[(0.0, 400 << 20)], label="test")
    assert intent_of(c, 1.5) == "memory=600M,category=test"
    assert intent_of(Call(1, 0, 1, label="we ird!"), 1.5) == "memory=64M,category=weird"


def test_demo_generator_matches_the_published_shape():
    a, b = generate(0, seed=7), generate(0, seed=7)
    assert [s.mem_bytes for s in a.samples] == [s.mem_bytes for s in b.samples]
    s = to_schedule(a)
    assert 170 * MB <= s.baseline_bytes <= 200 * MB
    assert sum(1 for c in a.calls if c.category == "test") >= 2
    assert 600 * MB <= s.peak_bytes <= 1400 * MB
    assert s.peak_bytes / s.avg_bytes > 2
