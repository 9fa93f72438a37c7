"""Real replays: tenants in real cgroups (bare and podman) allocating real memory under each
policy, with metrics that must add up. Small traces (a few seconds, tens of MB)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentshim.replay.hostcg import cgroup_mounts
from agentshim.replay.metrics import POLICY_KEYS
from agentshim.replay.runner import ReplayConfig, ReplayError, run_replay
from agentshim.trace.format import write_trace
from agentshim.trace.model import Sample, ToolCall, Trace
from agentshim.units import MB

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "traces"

T0 = 1_700_000_000.0
DT = 0.1


def synthetic(name: str, base_mb: float, bursts: list[tuple[float, float, float]],
              duration: float = 6.0) -> Trace:
    """A trace: base_mb of agent, bash calls (start, end, MB above the agent) holding their
    memory from 0.2 s after their start to 0.1 s before their end; one small git call."""
    calls = [ToolCall(T0 + a, T0 + b, "Bash", command="python -m pytest -q")
             for a, b, _ in bursts]
    calls.append(ToolCall(T0 + duration - 1.0, T0 + duration - 0.6, "Bash",
                          command="git status"))
    samples = []
    for i in range(int(duration / DT) + 1):
        t = i * DT
        mem = base_mb + sum(mb for a, b, mb in bursts if a + 0.2 <= t < b - 0.1)
        samples.append(Sample(T0 + t, int(mem * MB), 20.0))
    return Trace(name, samples=samples, calls=calls).sort()


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("traces")
    specs = [("a", 40, [(1.0, 4.0, 120)]),          # a 120 MB burst held ~2.7 s
             ("b", 40, [(1.5, 3.0, 60), (3.5, 4.5, 40)]),
             ("c", 40, [(0.8, 2.0, 30)])]
    return [write_trace(synthetic(n, b, bursts), d / n) for n, b, bursts in specs]


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: replay makes cgroups")


def assert_nothing_left(run_id: str) -> None:
    left = [str(p) for m in cgroup_mounts() for p in m.glob(f"agentshim-replay-{run_id}-*")]
    assert left == [], f"cgroups left behind: {left}"
    if shutil.which("podman"):
        r = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"],
                           capture_output=True, text=True, check=False)
        assert f"ashim-replay-{run_id}" not in r.stdout


def check_keys(doc: dict) -> None:
    for name, m in doc["policies"].items():
        missing = [k for k in POLICY_KEYS if k not in m]
        assert not missing, f"{name} lacks {missing}"
        assert len(m["tenant_detail"]) == doc["config"]["tenants"]


def test_every_policy_bare(traces, root):
    """One run, five policies, bare cgroups: the host has room for everything, static limits
    are below the 120 MB burst, static-fixed's 2G above everything, the reactive poller is
    told to react at 20% of the host."""
    cfg = ReplayConfig(traces=traces, swap=False, host_memory=1 << 30, static_size="110M",
                       podman=False,
                       reactive_share=0.2)
    result = run_replay(cfg, progress=lambda _: None)
    doc = result.to_json()
    check_keys(doc)
    p = doc["policies"]
    bash_calls = [2, 3, 2]  # bursts + the git call, per tenant
    # none: nothing is killed, everyone completes about on time, all calls ran
    n = p["none"]
    assert (n["tenants_completed"], n["agent_deaths"], n["tool_calls_killed"]) == (3, 0, 0)
    assert [t["tool_calls"] for t in n["tenant_detail"]] == bash_calls
    assert all(t["completion_ratio"] < 1.3 for t in n["tenant_detail"])
    assert n["alloc_latency_p50_ms"] > 0 and n["alloc_latency_p95_ms"] >= n["alloc_latency_p50_ms"]
    assert 120 <= n["peak_mb"] < 1024 and 0 < n["avg_mb"] <= n["peak_mb"]
    assert n["host_oom_kills"] == 0
    # static at 110M: the 120 MB burst cannot fit; the OOM killer takes the call, not the agent
    s = p["static"]
    a = s["tenant_detail"][0]
    assert a["tool_calls_killed"] >= 1 and a["completed"], a
    assert s["tool_calls_killed"] + s["agent_deaths"] >= 1
    assert s["host_oom_kills"] >= s["tool_calls_killed"] + s["agent_deaths"]
    # static-fixed at the operators' 2G: above every burst, so nothing is killed
    f = p["static-fixed"]
    assert (f["tenants_completed"], f["tool_calls_killed"], f["calls_failed"]) == (3, 0, 0)
    assert {t["static_limit_mb"] for t in f["tenant_detail"]} == {2048.0}
    # reactive: the poller kills whole containers: those agents die
    r = p["reactive"]
    assert r["reactive_kills"] >= 1 and r["agent_deaths"] >= 1
    assert r["agent_deaths"] + r["tenants_completed"] == 3
    # agentshim: every bash call went through the wrapper into its own cgroup and was
    # recorded; with room on the host nothing is killed
    g = p["agentshim"]
    assert (g["tenants_completed"], g["agent_deaths"], g["tool_calls_killed"]) == (3, 0, 0)
    assert [t["agentshim_records"] for t in g["tenant_detail"]] == bash_calls
    assert g["tenant_detail"][0]["priority"] == "high"
    assert_nothing_left(cfg.run_id)


def test_podman_tenants_under_agentshim_and_static(traces, root):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (packaging/setup-host.sh)")
    cfg = ReplayConfig(traces=traces[:2], swap=False, host_memory=768 << 20, static_size="100M",
                       policies=["static", "agentshim"])
    result = run_replay(cfg, progress=lambda _: None)
    doc = result.to_json()
    check_keys(doc)
    assert doc["config"]["podman"] is True
    s, g = doc["policies"]["static"], doc["policies"]["agentshim"]
    assert s["tool_calls_killed"] + s["agent_deaths"] >= 1
    assert (g["tenants_completed"], g["agent_deaths"], g["tool_calls_killed"]) == (2, 0, 0)
    assert [t["agentshim_records"] for t in g["tenant_detail"]] == [2, 3]
    assert all(t["peak_mb"] >= 40 for t in g["tenant_detail"])  # seen in the container cgroup
    assert_nothing_left(cfg.run_id)


def test_cli_json_and_plot(traces, root, tmp_path):
    plot = tmp_path / "replay.png"
    r = subprocess.run([str(Path(sys.executable).parent / "agentshim"), "replay", str(traces[2]),
                        "--no-podman", "--policy", "none", "--overcommit", "1", "--speed", "2",
                        "--json", "--plot", str(plot)],
                       capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert list(doc["policies"]) == ["none"]
    check_keys(doc)
    assert doc["policies"]["none"]["tenants_completed"] == 1
    assert "[none] done" in r.stderr
    assert plot.stat().st_size > 10_000


def test_host_too_big_for_this_machine_is_refused(traces, root):
    with pytest.raises(ReplayError, match="more than 80%"):
        run_replay(ReplayConfig(traces=traces, swap=False, host_memory=1 << 50, podman=False),
                   progress=lambda _: None)


def test_shared_traces_replay(root):
    found = sorted(p for p in (SHARED / "all_images_haiku").glob("*") if p.is_dir())
    if len(found) < 2:
        pytest.skip(f"the published traces are not at {SHARED} (see ../shared/traces)")
    # two real tasks, the first 150 s of each at 25x, memory halved, room for all
    cfg = ReplayConfig(traces=found[:2], swap=False, speed=25, mem_scale=0.5, max_duration_s=150,
                       overcommit=0.8, podman=False, policies=["none"])
    result = run_replay(cfg, progress=lambda _: None)
    n = result.to_json()["policies"]["none"]
    assert (n["tenants_completed"], n["agent_deaths"], n["tool_calls_killed"]) == (2, 0, 0)
    assert n["tool_calls"] > 0 and n["peak_mb"] > 150
    assert_nothing_left(cfg.run_id)


def test_a_killed_call_is_rerun_and_counted(traces, root):
    """Static 110M under a 120 MB burst: the OOM killer kills the call, the agent re-runs it
    (retries=1), it is killed again and counted failed; the agent lives and completes."""
    cfg = ReplayConfig(traces=traces[:1], swap=False, host_memory=512 << 20, static_size="110M",
                       podman=False, policies=["none", "static"], retries=1)
    doc = run_replay(cfg, progress=lambda _: None).to_json()
    check_keys(doc)
    n, s = doc["policies"]["none"], doc["policies"]["static"]
    assert (n["tool_calls_killed"], n["calls_retried"], n["work_lost_cpu_s"]) == (0, 0, 0)
    a = s["tenant_detail"][0]
    assert a["completed"] and not a["agent_died"], a
    assert a["tool_calls_killed"] == 2 and a["tool_call_runs"] == a["tool_calls"] + 1
    assert (a["calls_retried"], a["calls_failed"]) == (1, 1)
    assert a["work_lost_cpu_s"] > 0  # the killed runs' CPU (their rusage)
    assert s["host_oom_kills"] >= 2
    assert_nothing_left(cfg.run_id)


ZRAM_CONTROL = Path("/sys/class/zram-control")


def zram_ratio(data_per_page: list[bytes], algorithm: str = "lz4") -> tuple[float, int]:
    """Write pages to a zram device of our own (hot_add, removed after) with `algorithm`;
    (orig_data_size / compr_data_size, same_pages) from its mm_stat."""
    dev_id = int((ZRAM_CONTROL / "hot_add").read_text())
    sysdir = Path(f"/sys/block/zram{dev_id}")
    try:
        (sysdir / "comp_algorithm").write_text(algorithm)
        (sysdir / "disksize").write_text(str(64 << 20))
        fd = os.open(f"/dev/zram{dev_id}", os.O_WRONLY)
        try:
            for p in data_per_page:
                os.write(fd, p)
            os.fsync(fd)
        finally:
            os.close(fd)
        stat = [int(x) for x in (sysdir / "mm_stat").read_text().split()]
        orig, compr, same = stat[0], stat[1], stat[5]
        return (orig / compr if compr else float("inf")), same
    finally:
        (sysdir / "reset").write_text("1")
        (ZRAM_CONTROL / "hot_remove").write_text(str(dev_id))


def test_pages_in_zram_compress_like_real_memory(root):
    """Real lz4 in a real zram device: the replay's pages compress 2.3-3.2x and none is stored
    as same-filled; the old constant fill would be stored for free."""
    if not (ZRAM_CONTROL / "hot_add").exists() or not Path("/dev/zram0").exists():
        pytest.skip("no zram on this host (modprobe zram)")
    from agentshim.replay import pages

    buf = bytearray(32 << 20)
    pages.fill(buf, len(buf))
    chunks = [bytes(buf[i:i + (1 << 20)]) for i in range(0, len(buf), 1 << 20)]
    ratio, same = zram_ratio(chunks, "lz4")
    assert 2.3 <= ratio <= 3.2 and same == 0, (ratio, same)
    const_ratio, const_same = zram_ratio([b"\x5a" * (1 << 20)] * 8, "lz4")
    assert const_same == 8 * 256  # every constant page is a same page: free in zram
    print(f"zram lz4: replay pages {ratio:.2f}x, same pages {same}; constant fill "
          f"{const_same} same pages")


def test_sweep_smoke(traces, root, tmp_path):
    """Two overcommit points, two tiny tenants, two policies, bare cgroups: one row per
    (point, policy) with the numbers of that run, the best ratio per policy, a plot."""
    plot = tmp_path / "sweep.png"
    r = subprocess.run([str(Path(sys.executable).parent / "agentshim"), "replay",
                        str(traces[2]), str(traces[1]), "--no-podman", "--policy",
                        "none,agentshim", "--sweep-overcommit", "0.8,1.2", "--speed", "2",
                        "--json", "--plot", str(plot)],
                       capture_output=True, text=True, check=False, timeout=150)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [p["overcommit"] for p in doc["points"]] == [0.8, 1.2]
    small, big = (p["host_mb"] for p in doc["points"])
    assert small == pytest.approx(big * 1.2 / 0.8, rel=0.01)  # the host shrinks with R
    for p in doc["points"]:
        assert list(p["policies"]) == ["none", "agentshim"]
        for m in p["policies"].values():
            assert m["tenants"] == 2 and m["tool_call_runs"] >= 5
    # with room (0.8x) nothing dies and nothing is killed: both policies work there
    assert all(v is not None and v >= 0.8 for v in doc["best"].values()), doc["best"]
    assert plot.stat().st_size > 10_000
