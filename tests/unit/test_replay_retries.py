"""Re-runs of killed tool calls: the metrics' arithmetic on synthetic logs, and the tenant's
retry loop with real processes that are SIGKILLed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from agentshim.replay.metrics import KILLED, TenantOutcome, policy_metrics, tenant_metrics
from agentshim.replay.schedule import Call, Schedule
from agentshim.replay.tenant import Tenant


def run(index: int, attempt: int, code: int, cpu: float, final: bool) -> dict:
    return {"event": "call", "index": index, "kind": "bash", "attempt": attempt,
            "final": final, "exit": code, "cpu_s": cpu}


def test_retry_metrics_add_up():
    log = [{"event": "start"},
           run(0, 0, 0, 0.1, True),                                   # fine at once
           run(1, 0, KILLED, 0.5, False), run(1, 1, 0, 0.7, True),    # killed, re-run, ok
           run(2, 0, KILLED, 0.25, False), run(2, 1, KILLED, 0.25, False),
           run(2, 2, KILLED, 1.0, True),                              # killed 3x: failed
           run(3, 0, 2, 0.3, True),                                   # an error, not a kill
           {"event": "done", "wall_s": 12.0}]
    m = tenant_metrics(TenantOutcome(0, "a", "high", 10.0, 0, log=log))
    assert m["tool_calls"] == 4 and m["tool_call_runs"] == 7
    assert m["tool_calls_killed"] == 4  # every killed run counts
    assert m["calls_retried"] == 2 and m["calls_failed"] == 1
    assert m["tool_calls_failed"] == 1
    assert m["work_lost_cpu_s"] == 2.0  # 0.5 + 0.25 + 0.25 + 1.0, not the runs that ended
    other = TenantOutcome(1, "b", "low", 10.0, 0, log=[
        run(0, 0, KILLED, 0.5, False), run(0, 1, 0, 0.5, True), {"event": "done", "wall_s": 9}])
    p = policy_metrics([TenantOutcome(0, "a", "high", 10.0, 0, log=log), other], [], 1 << 30)
    assert (p["calls_retried"], p["calls_failed"], p["tool_calls_killed"]) == (3, 1, 5)
    assert p["work_lost_cpu_s"] == 2.5 and p["tool_call_runs"] == 9
    assert p["killed_share"] == round(5 / 9, 4)


def test_old_logs_without_attempts_count_one_run_per_call():
    log = [run(0, 0, KILLED, 0.0, True) | {"attempt": None}, {"event": "done", "wall_s": 1}]
    for e in log:
        e.pop("final", None)
    m = tenant_metrics(TenantOutcome(0, "a", "high", 1.0, 0, log=log))
    assert (m["tool_calls"], m["calls_retried"], m["calls_failed"]) == (1, 0, 1)


def fake_bash(tmp: Path, kills: int) -> Path:
    """A 'bash' that burns 0.3 s of CPU in a child and SIGKILLs itself on its first `kills`
    runs, then exits 0 (what a call killed by the OOM killer, then re-run, looks like)."""
    script = tmp / "bash"
    script.write_text(f"""#!/bin/bash
n=$(( $(cat {tmp}/count 2>/dev/null || echo 0) + 1 )); echo $n > {tmp}/count
if [ $n -le {kills} ]; then
  python3 -c 'import time
t = time.process_time()
while time.process_time() - t < 0.3: pass'
  kill -9 $$
fi
exit 0
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


NOMINAL = 0.05  # the call's own duration in the schedule


def tenant_run(tmp: Path, kills: int, retries: int) -> list[dict]:
    sched = Schedule("s", 0.5, 1 << 20, framework=[(0.0, 1 << 20)],
                     calls=[Call(0, 0.1, NOMINAL, profile=[(0.0, 1 << 20)])])
    sched.save(tmp / "schedule.json")
    out = tmp / "out"
    Tenant(sched, tmp / "schedule.json", out, str(fake_bash(tmp, kills)), "python3", 1.5,
           retries).run()
    return [json.loads(x) for x in (out / "tenant.jsonl").read_text().splitlines()]


def test_tenant_reruns_a_killed_call_and_times_it(tmp_path):
    log = tenant_run(tmp_path, kills=1, retries=2)
    calls = [e for e in log if e["event"] == "call"]
    assert [(c["attempt"], c["exit"], c["final"]) for c in calls] == [(0, KILLED, False),
                                                                       (1, 0, True)]
    assert calls[0]["cpu_s"] >= 0.29  # the killed run's CPU, from its rusage
    done = next(e for e in log if e["event"] == "done")
    # the killed run took at least its CPU time, then came the re-run: the task is later
    # than the trace by at least that, less the call's nominal duration
    assert done["lag_s"] >= calls[0]["cpu_s"] - NOMINAL - 0.01
    assert (tmp_path / "count").read_text().strip() == "2"


def test_tenant_gives_up_after_its_retries(tmp_path):
    log = tenant_run(tmp_path, kills=5, retries=1)
    calls = [e for e in log if e["event"] == "call"]
    assert [(c["attempt"], c["exit"]) for c in calls] == [(0, KILLED), (1, KILLED)]
    assert calls[-1]["final"] and any(e["event"] == "done" for e in log)
    m = tenant_metrics(TenantOutcome(0, "s", "high", 0.5, 0, log=log))
    assert m["calls_failed"] == 1 and m["calls_retried"] == 1
    assert m["work_lost_cpu_s"] >= 0.58  # two killed runs of 0.3 s CPU each
