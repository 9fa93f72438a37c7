"""The density sweep's arithmetic: ratios, what counts as working, the highest working
overcommit per policy, the table."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from agentshim.cli import main
from agentshim.replay.sweep import best_overcommit, density_ratio, format_sweep, parse_ratios, works


def m(killed: int, deaths: int, runs: int = 100, ratio: float = 1.0, timed_out: int = 0) -> dict:
    return {"tool_calls_killed": killed, "agent_deaths": deaths, "tool_call_runs": runs,
            "tenants_timed_out": timed_out, "work_lost_cpu_s": killed * 0.5,
            "completion_ratio": ratio, "tenant_detail": [{"completion_ratio": ratio}]}


def test_parse_ratios():
    assert parse_ratios("2,1, 1.5,2") == [1.0, 1.5, 2.0]
    for bad in ("", "0,1", "a,2", "-1"):
        with pytest.raises(ValueError):
            parse_ratios(bad)


def test_what_works():
    assert works(m(2, 0))  # 2% of 100 runs
    assert not works(m(3, 0))
    assert not works(m(0, 1))
    assert not works(m(0, 0, timed_out=1))
    assert works(m(0, 0, runs=0))


def test_best_overcommit_is_the_last_of_an_unbroken_run():
    points = [{"overcommit": r, "host_mb": 1000 / r, "policies": p} for r, p in [
        (2.0, {"none": m(10, 0), "agentshim": m(1, 0), "static": m(0, 0)}),
        (1.0, {"none": m(0, 0), "agentshim": m(0, 0), "static": m(5, 0)}),
        (3.0, {"none": m(0, 0), "agentshim": m(4, 0, ratio=1.2), "static": m(0, 0)}),
    ]]
    best = best_overcommit(points)
    assert best == {"none": 1.0, "agentshim": 2.0, "static": None}  # none's 3x pass is noise
    text = format_sweep({"points": sorted(points, key=lambda p: p["overcommit"]),
                         "best": best})
    assert "agentshim: 2x" in text and "none: 1x" in text and "static: none (fails at 1x)" in text
    assert text.count("\n") >= 9 + 4  # header, 9 rows, blank, title, 3 policies
    assert "1.200" in text  # agentshim's completion at 3x


def test_cli_refuses_a_sweep_with_a_host_size(tmp_path):
    r = CliRunner().invoke(main, ["replay", str(tmp_path), "--sweep-overcommit", "1,2",
                                  "--overcommit", "2"])
    assert r.exit_code == 2 and "--sweep-overcommit" in r.output


def test_density_ratio_is_agentshims_best_over_the_best_of_none_and_static() -> None:
    assert density_ratio({"none": 1.5, "static": 2.0, "agentshim": 3.0}) == 1.5
    assert density_ratio({"none": None, "static": None, "agentshim": 2.0}) == float("inf")
    assert density_ratio({"none": 2.0, "agentshim": None}) is None
    assert density_ratio({"none": 2.0, "reactive": 4.0, "agentshim": 2.0}) == 1.0
