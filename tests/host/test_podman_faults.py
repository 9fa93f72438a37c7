"""Faults around a container's life on real podman (runc on this host): a start that fails after
prestart leaves nothing behind; a slot annotation copied into another container takes nothing
over; a full state directory refuses no container (issue 15 rows 6, 10, 8)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemon_support import fill_fs, tmpfs, wait_for
from tests.podman_support import IMAGE, agentshim_fixture, cgroup_lines, run_container

ash = agentshim_fixture("ashim-faults")


def _plans(state: Path) -> set[str]:
    return {p.name for p in (state / "hooks").glob("slot-*.json")}


def _slots(ash) -> set[str]:
    return {p.name for p in (ash.run_dir / "slots").iterdir()}


def _cgroups_of(cid: str) -> list[Path]:
    """Directories of the container's cgroup (podman's libpod-<id>) in any hierarchy."""
    return [p for h in Path("/sys/fs/cgroup").iterdir() for p in h.glob(f"**/*{cid}*")]


def test_a_start_that_fails_after_prestart_is_torn_down_by_the_daemon(ash, tmp_path):
    ash.run_rm(tmp_path / "warm", "true")  # the daemon runs; that container left nothing
    plans, slots = _plans(ash.state_dir), _slots(ash)
    cidfile = tmp_path / "cid"
    r = ash.hooked("run", "--rm", "--cidfile", str(cidfile), "--name", ash.name(),
                   "--annotation", "io.agentshim.enable=true", IMAGE, "/nonexistent-cmd",
                   check=False)
    assert r.returncode != 0, "the start was meant to fail"
    cid = cidfile.read_text().strip()

    def clean() -> bool:
        return (_slots(ash) == slots and _plans(ash.state_dir) == plans
                and cid not in [c["id"] for c in ash.status()["containers"]]
                and not (ash.state_dir / "hooks" / f"{cid}.json").exists()
                and not (ash.state_dir / "containers" / f"{cid}.json").exists()
                and not list((ash.state_dir / "hooks" / "claims").glob("*"))
                and not _cgroups_of(cid))

    wait_for(clean, timeout_s=20, what="the failed container's registration, slot, plan, "
             "state and cgroups to go")
    # it was registered (prestart ran): the daemon wrote its summary when unregistering it
    assert json.loads((ash.state_dir / "summaries" / f"{cid}.json").read_text())["calls"] == 0


def test_a_copied_slot_annotation_takes_nothing_over(ash):
    with run_container(ash.hooked, ash.name(), "--annotation", "io.agentshim.enable=true") as a:
        slot_name = ash.hook_record(a.id)["slot"]
        slot = ash.slot_dir(a.id)
        for extra in (["--annotation", "io.agentshim.enable=false"], []):
            with run_container(ash.hooked, ash.name(), *extra, "--annotation",
                               f"io.agentshim.slot={slot_name}") as b:
                assert b.exec("true").returncode == 0
            assert b.id not in [c["id"] for c in ash.status()["containers"]]
            assert (slot / "broker.sock").is_socket(), "B's removal took A's slot"
            r = a.exec("bash", "-c", "cat /proc/self/cgroup")
            assert r.returncode == 0, r.stderr
            assert "running unmanaged" not in r.stderr, r.stderr
            assert "/tools/call-" in cgroup_lines(r.stdout)["memory"], r.stdout


def test_a_full_state_directory_refuses_no_container_and_its_calls_stay_managed(ash, tmp_path):
    ash.stop_daemon()  # the next hook starts one whose state is on the small tmpfs
    try:
        with tmpfs(ash.state_dir, "8m"):
            ash.run_rm(tmp_path / "warm", "true")  # the bash copy is stored, the daemon runs
            fill_fs(ash.state_dir)
            with run_container(ash.hooked, ash.name(), "--annotation",
                               "io.agentshim.enable=true") as c:
                r = c.exec("bash", "-c", "cat /proc/self/cgroup")
                assert r.returncode == 0, r.stderr
                assert "Traceback" not in r.stderr and "unmanaged" not in r.stderr, r.stderr
                assert "/tools/call-" in cgroup_lines(r.stdout)["memory"], r.stdout
                assert ash.status()["dropped_log_lines"] > 0
            wait_for(lambda: c.id not in [x["id"] for x in ash.status()["containers"]],
                     what="the container to be unregistered")
            assert not _cgroups_of(c.id), "cgroups left behind"
            log = (ash.state_dir / "agentshimd.log").read_text()
            assert "Traceback" not in log, log[-3000:]
    finally:
        ash.stop_daemon()
