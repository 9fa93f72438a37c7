"""`agentshim trace` on real podman containers: a container under agentshim running a few tool
calls, one allocating ~250 MiB, recorded live at 100 ms; `agentshim report` then shows those
calls with their peaks and the memory series shows the burst. Also an unmanaged container
(container-level series only, stopped by SIGINT) and an unknown one.

Needs: root, podman with runc (setup-host.sh), the test image (tests/images/), a C compiler.
Runs its own agentshimd with private run/state dirs (tests/podman_support.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentshim.units import MB
from tests.podman_support import AGENTSHIM, Agentshim, Container, agentshim_fixture, run_container

MiB = 1 << 20

ALLOC = 250 * MiB
# one line per ';' (podman cuts annotations at newlines); `dd if=` calls are category test
POLICY = ("memory:;  total: 1G;  tool_default: 256M;"
          "categories:;  test:;    match: ['dd if='];    memory: 512M")
ALLOC_CALL = f"dd if=/dev/zero of=/dev/null bs={ALLOC // MiB}M count=80"

ash = agentshim_fixture("ashim-trace")


@pytest.fixture
def run(ash: Agentshim) -> Iterator[Callable[..., Container]]:
    """Starts a container (args: podman run options); each is removed after the test."""
    made: list[Container] = []

    def start(*args: str) -> Container:
        made.append(run_container(ash.hooked, ash.name(), *args))
        return made[-1]

    yield start
    for c in made:
        c.rm()


def _start_trace(name: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([str(AGENTSHIM), "trace", name, "-o", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    samples = out / "samples.jsonl"
    while not (samples.exists() and len(samples.read_text().splitlines()) >= 5):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"agentshim trace did not start recording: {err}")
        time.sleep(0.05)
    return proc


def _finish(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"agentshim trace did not stop: {err}")
    assert proc.returncode == 0, err
    return err


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(AGENTSHIM), "report", *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def test_live_trace_of_a_managed_container(ash: Agentshim, run: Callable[..., Container],
                                           tmp_path: Path) -> None:
    c = run("--annotation", f"io.agentshim.policy={POLICY}")
    name = c.name
    out = tmp_path / "live"
    proc = _start_trace(name, out)
    time.sleep(1.0)  # some quiet baseline first
    calls = ["echo hello", "ls -l /usr/bin > /dev/null", ALLOC_CALL, "cat /etc/passwd"]
    windows = []
    for cmd in calls:
        t0 = time.time()
        r = c.exec("bash", "-c", cmd)
        windows.append((t0, time.time()))
        assert r.returncode == 0, (cmd, r.stderr)
        time.sleep(0.5)
    time.sleep(0.5)
    ash.podman("stop", "-t", "0", name)  # the recorder stops by itself when the container exits
    err = _finish(proc)
    assert "container exited" in err and "recorder CPU" in err
    assert "\r" not in err  # no live status line when stderr is not a tty

    meta = json.loads((out / "meta.json").read_text())
    assert (meta["format"], meta["version"]) == ("agentshim-trace", 1)
    m = meta["meta"]
    assert m["managed"] is True and m["container_name"] == name
    assert m["stop_reason"] == "container_exited" and m["ended"] > m["started"]
    assert m["found_by"].startswith("prestart record")
    assert m["calls"] == len(calls)

    doc = json.loads(_report(str(out), "--json", "--burst-mb", "150").stdout)
    row = doc["tasks"][0]
    assert row["task"] == "live" and row["calls"] == len(calls)
    # about one sample per 100 ms (the cadence, roughly: not a timing assert)
    assert row["samples"] >= 0.7 * row["duration_s"] / 0.1, row
    assert row["sample_interval_s"] == pytest.approx(0.1, abs=0.02)
    # the allocating call: its own cgroup's peak, and the category the policy gives it
    test = row["categories"]["test"]
    assert test["count"] == 1
    assert ALLOC / MB <= test["peak_mb_p50"] <= ALLOC / MB + 60, test
    assert row["categories"]["file_ops"]["count"] == 2
    assert row["categories"]["file_ops"]["peak_mb_p95"] < 50
    # the burst is in the container's series, inside the allocating call's window
    assert row["burst_count"] == 1 and row["bursts_in_tool_calls"] == 1.0, row
    assert row["peak_mb"] - row["baseline_mb"] >= 0.9 * ALLOC / MB
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    a0, a1 = windows[2]
    inside = [s for s in samples if a0 <= s["t"] <= a1]
    outside = [s for s in samples if s["t"] < windows[0][0]]
    assert max(s["mem_bytes"] for s in inside) >= ALLOC
    assert max(s["mem_bytes"] for s in outside) < 50 * MB
    assert max(s["tools"]["mem_bytes"] for s in inside if s.get("tools")) >= ALLOC
    assert max((s["tools"]["cpu_pct"] or 0) for s in inside if s.get("tools")) > 5
    assert all(s["framework"]["mem_bytes"] < 50 * MB for s in samples if s.get("framework"))

    # agentshimd's events (docs/events.md) written while recording are in the trace, renamed
    daemon_events = Path(m["events_file"])
    if daemon_events.exists():
        lines = [json.loads(x) for x in daemon_events.read_text().splitlines()]
        want = [(e["ts"], e["action"], e.get("call")) for e in lines if e["ts"] >= m["started"]]
        got = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
        assert [(e["t"], e["type"], e.get("call")) for e in got] == want
        assert [e["call"] for e in got if e["type"] == "call_start"] == [1, 2, 3, 4]

    text = _report(str(out), "--burst-mb", "150", "--plots", str(tmp_path / "plots")).stdout
    assert "test" in text and "file_ops" in text and "live" in text
    assert (tmp_path / "plots" / "memory-live.png").read_bytes().startswith(b"\x89PNG")


def test_unmanaged_container_is_recorded_until_sigint(ash: Agentshim,
                                                      run: Callable[..., Container],
                                                      tmp_path: Path) -> None:
    name = run().name
    out = tmp_path / "plain"
    proc = _start_trace(name, out, "--interval", "50ms")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    err = _finish(proc)
    assert "not managed by agentshim" in err and "stopped" in err
    m = json.loads((out / "meta.json").read_text())["meta"]
    assert m["managed"] is False and m["stop_reason"] == "signal" and m["ended"]
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == m["samples"] >= 10
    assert all("framework" not in s and s["mem_bytes"] > 0 for s in samples)
    assert ash.podman("inspect", name, "--format", "{{.State.Status}}").stdout.strip() == "running"


def test_unknown_container_is_a_clear_error(ash: Agentshim, tmp_path: Path) -> None:
    r = subprocess.run([str(AGENTSHIM), "trace", f"ashim-trace-none-{uuid.uuid4().hex[:6]}",
                        "-o", str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Error: unknown container 'ashim-trace-none-" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x").exists()
