"""Nothing is left behind: 1000 tool calls in a row leave no call cgroup, a removed container
leaves no tree, socket, mount or registration; a container without the annotations is not
touched at all. Real podman with runc on this host."""

from __future__ import annotations

import time
from pathlib import Path

from agentshim.cgroups import Cgroup, detect_layout
from tests.podman_support import (
    agentshim_fixture,
    assert_in_call,
    assert_removed,
    call_dirs,
    cgroup_lines,
    container_cgroup,
    managed_hierarchies,
    mounts_mentioning,
    run_container,
)

CALLS = 1000

ash = agentshim_fixture("ashim-clean")


def test_a_thousand_calls_leave_no_call_cgroups_and_removal_leaves_nothing(ash):
    c = run_container(ash.hooked, ash.name(), "--annotation", "io.agentshim.enable=true")
    root = container_cgroup(c.pid())
    slot = ash.slot_dir(c.id)
    assert (slot / "broker.sock").is_socket()
    # busybox sh is not bash: the loop itself is no tool call, each `bash -c` in it is one
    loop = f"i=0; while [ $i -lt {CALLS} ]; do bash -c 'exit $0' $((i % 3)); i=$((i+1)); done"
    t0 = time.monotonic()
    r = c.exec("sh", "-c", loop + "; echo done", timeout=300)
    took = time.monotonic() - t0
    assert r.stdout == "done\n" and r.stderr == "", r.stderr[-2000:]
    recs = ash.records(c.id)
    assert [x["call"] for x in recs] == list(range(1, CALLS + 1))
    assert [x["exit"] for x in recs] == [i % 3 for i in range(CALLS)]
    assert all(x["end"] == "reported" and not x["lingering"] for x in recs)
    assert call_dirs(root) == [], "call cgroups left behind"
    for h, d in root.dirs.items():  # framework/ and tools/ only, in every hierarchy
        assert sorted(p.name for p in d.iterdir() if p.is_dir()) == ["framework", "tools"], h
    print(f"{CALLS} calls in {took:.1f} s ({took / CALLS * 1000:.1f} ms per call via podman "
          "exec loop)")

    c.rm()
    assert_removed(root)
    assert not slot.exists(), "slot directory (broker socket) left behind"
    assert mounts_mentioning(str(slot), c.id) == [], "mounts left behind"
    assert not (ash.state_dir / "hooks" / f"{c.id}.json").exists()
    assert not (ash.state_dir / "containers" / f"{c.id}.json").exists()
    assert c.id not in [x["id"] for x in ash.status()["containers"]]
    summary = (ash.state_dir / "summaries" / f"{c.id}.json").read_text()
    assert f'"calls": {CALLS}' in summary


def test_a_container_without_the_annotations_is_untouched(ash):
    slots_before = set((ash.run_dir / "slots").glob("*")) if (ash.run_dir / "slots").exists() \
        else set()
    with run_container(ash.hooked, ash.name()) as c:
        pid = c.pid()
        cg = Cgroup.of_pid(detect_layout(), pid)
        assert cg.name.startswith("libpod-") and c.id in cg.name, cg
        for h, d in cg.dirs.items():  # no framework/ or tools/ in any hierarchy
            assert [p.name for p in d.iterdir() if p.is_dir()] == [], h
        mountinfo = c.exec("cat", "/proc/self/mountinfo", check=True).stdout
        assert "/run/agentshim" not in mountinfo and "agentshim-bash" not in mountinfo
        # bash is the image's own: the host's bash copied by the image build, same size
        size = c.exec("stat", "-c", "%s", "/usr/bin/bash", check=True).stdout.strip()
        assert int(size) == Path("/usr/bin/bash").stat().st_size
        env = c.podman("inspect", c.name, "--format", "{{.Config.Env}}").stdout
        assert "AGENTSHIM" not in env
        annotations = c.podman("inspect", c.name, "--format", "{{.Config.Annotations}}").stdout
        assert "io.agentshim" not in annotations
        r = c.exec("bash", "-c", "cat /proc/self/cgroup", check=True)
        assert r.stderr == ""
        lines = cgroup_lines(r.stdout)
        for h in managed_hierarchies():
            assert lines[h].endswith(cg.dirs[h].name), (h, lines[h])
        assert Cgroup.of_pid(detect_layout(), pid) == cg
        assert not (ash.state_dir / "hooks" / f"{c.id}.json").exists()
        assert ash.records(c.id) == []
        slots_after = set((ash.run_dir / "slots").glob("*")) if (ash.run_dir / "slots").exists() \
            else set()
        assert slots_after == slots_before


def test_run_rm_of_a_managed_container_leaves_nothing(ash, tmp_path):
    """The whole life cycle in one `podman run --rm`, the agent itself being a `bash -c`."""
    cid, r = ash.run_rm(tmp_path / "cid", "bash", "-c", "cat /proc/self/cgroup")
    assert_in_call(r.stdout, 1)
    assert [x["call"] for x in ash.records(cid)] == [1]
    assert (ash.state_dir / "summaries" / f"{cid}.json").exists()
    assert not (ash.state_dir / "hooks" / f"{cid}.json").exists()
    assert mounts_mentioning(cid) == []
    rel = cgroup_lines(r.stdout)["memory"].removesuffix("/tools/call-1")
    assert_removed(Cgroup.at(detect_layout(), rel))


def test_stop_and_start_again(ash):
    """A stopped container keeps nothing of agentshim; started again, it is managed again."""
    with run_container(ash.hooked, ash.name(), "--annotation", "io.agentshim.enable=true") as c:
        root = container_cgroup(c.pid())
        slot = ash.slot_dir(c.id)
        assert_in_call(c.exec("bash", "-c", "cat /proc/self/cgroup", check=True).stdout, 1)
        ash.hooked("stop", "-t", "0", c.name)
        assert not any(d.exists() for d in root.dirs.values())
        assert not slot.exists()
        assert not (ash.state_dir / "hooks" / f"{c.id}.json").exists()
        ash.hooked("start", c.name)
        assert Cgroup.of_pid(detect_layout(), c.pid()).name == "framework"
        assert ash.slot_dir(c.id) != slot
        r = c.exec("bash", "-c", "cat /proc/self/cgroup", check=True)
        assert "/tools/call-" in cgroup_lines(r.stdout)["memory"]
        assert [x["end"] for x in ash.records(c.id)] == ["reported", "reported"]
