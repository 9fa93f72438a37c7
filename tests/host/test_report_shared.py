"""`agentshim report` on the real agent traces beside the repository (../shared/traces):
it runs over every task of the three folders, and on the cloud-backend folder its figures
agree with the study's (framework baseline ~185 MB, ~98.5% of > 300 MB bursts in tool calls)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentshim.cli.report import report as report_cmd

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"
FOLDERS = ("all_images_haiku", "all_images_local", "batch_swebench_18tasks")


def _folder(name: str) -> Path:
    path = TRACES / name
    if not path.is_dir():
        pytest.skip(f"shared traces not available at {path}")
    return path


def _runner() -> CliRunner:
    """A runner keeping stderr apart from stdout (click 8.2 always does)."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def _run(args: list[str]) -> dict:
    res = _runner().invoke(report_cmd, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize("folder", FOLDERS)
def test_report_runs_over_every_task(folder: str, tmp_path: Path) -> None:
    path = _folder(folder)
    tasks = sorted(p.name for p in path.iterdir() if (p / "resources.json").is_file())
    doc = _run([str(path), "--json", "--plots", str(tmp_path)])
    assert sorted(t["task"] for t in doc["tasks"]) == tasks
    for row in doc["tasks"]:
        assert row["samples"] >= 10 and row["duration_s"] >= 60, row["task"]
        assert row["peak_mb"] >= row["avg_mb"] >= row["baseline_mb"] > 0, row["task"]
        assert 0 <= row["tool_time_share"] <= 1, row["task"]
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == len(tasks) + 3
    for png in pngs:
        assert png.stat().st_size > 1000 and png.read_bytes().startswith(b"\x89PNG"), png
    text = CliRunner().invoke(report_cmd, [str(path)])
    assert text.exit_code == 0 and "bash category" in text.output


def test_old_format_ends_are_estimated() -> None:
    doc = _run([str(_folder("batch_swebench_18tasks")), "--json"])
    assert doc["aggregate"]["ends_estimated"] == sum(t["calls"] for t in doc["tasks"]) > 0
    assert set(doc["aggregate"]["categories"]) == {"unknown"}  # no command lines in that format


def test_cloud_backend_figures_agree_with_the_study() -> None:
    doc = _run([str(_folder("all_images_haiku")), "--json", "--burst-mb", "300"])
    baselines = [t["baseline_mb"] for t in doc["tasks"]]
    assert 120 <= statistics.median(baselines) <= 260
    agg = doc["aggregate"]
    assert agg["burst_count"] > 0
    assert agg["bursts_in_tool_calls"] > 0.8
    assert agg["spread"]["cpu_avg_pct"]["median"] < 13
    assert agg["ends_estimated"] == 0


def test_whole_shared_folder_in_one_report(tmp_path: Path) -> None:
    root = _folder("")
    doc = _run([str(root), "--json", "--plots", str(tmp_path)])
    count = sum(1 for f in FOLDERS for p in (root / f).iterdir() if p.is_dir())
    assert len(doc["tasks"]) == count
    # task names repeat across folders: their plots must not overwrite each other
    assert len(list(tmp_path.glob("memory-*.png"))) == count
