"""The outcome line: computed from the numbers of each run, with the swap seen in
/proc/swaps."""

from __future__ import annotations

from pathlib import Path

from agentshim.replay.output import outcome_line, swap_phrase
from agentshim.replay.runner import swap_devices


def doc(killed: dict[str, int], deaths: dict[str, int], ratio: dict[str, float],
        swap: list | None = None) -> dict:
    return {"config": {"swap": swap or []},
            "policies": {n: {"tool_calls_killed": killed[n], "agent_deaths": deaths[n],
                             "completion_ratio": ratio[n], "calls_retried": 1,
                             "calls_failed": 0, "work_lost_cpu_s": 0.5 * killed[n]}
                         for n in killed}}


def test_line_follows_the_numbers():
    a = outcome_line(doc({"none": 7, "static": 18, "agentshim": 0},
                         {"none": 0, "static": 0, "agentshim": 0},
                         {"none": 1.02, "static": 1.0, "agentshim": 1.1}))
    assert a.startswith("agentshim killed 0 vs none's 7, static's 18 tool calls")
    assert "mean completion 1.10x vs none's 1.02x, static's 1.00x" in a
    assert "CPU s lost in killed calls 0.0 vs none's 3.5, static's 9.0" in a
    assert "no swap" in a
    b = outcome_line(doc({"none": 2, "reactive": 1}, {"none": 0, "reactive": 2},
                         {"none": 1.0, "reactive": 1.3}))
    assert b.startswith("none killed 2 vs reactive's 1")  # no agentshim: the first leads
    assert "agent deaths 0 vs reactive's 2" in b
    assert outcome_line({"policies": {}}) == "no policy ran"


def test_swap_read_from_proc_swaps(tmp_path: Path):
    f = tmp_path / "swaps"
    f.write_text("Filename\tType\tSize\tUsed\tPriority\n"
                 "/dev/zram0                              partition\t1048572\t2048\t100\n")
    devs = swap_devices(f)
    assert devs == [{"device": "/dev/zram0", "type": "zram", "size_kb": 1048572,
                     "used_kb": 2048}]
    assert swap_phrase(devs) == "swap on: /dev/zram0 1024 MiB"
    f.write_text("Filename\tType\tSize\tUsed\tPriority\n")
    assert swap_devices(f) == [] and swap_phrase([]).startswith("no swap")
    assert swap_devices(tmp_path / "absent") == []
    assert swap_phrase(devs, allowed=False) == "swap off for this run (--no-swap)"
