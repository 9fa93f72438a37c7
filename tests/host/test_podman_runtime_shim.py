"""agentshim-runtime alone (no hooks.d hooks): `podman --runtime agentshim-runtime` gives a managed
container (wrapper, tree, registration, managed calls) and `delete` cleans up what poststop
would. Real podman with runc on this host."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from agentshim.cgroups import Cgroup, detect_layout
from agentshim.runtime_shim import add_prestart_hook, container_id_of, find_command
from tests.podman_support import (
    SHIM,
    Podman,
    agentshim_fixture,
    assert_in_call,
    assert_removed,
    cgroup_lines,
    container_cgroup,
    mounts_mentioning,
    private_env,
    run_container,
)


def shim_podman(root: Path) -> Podman:
    """podman running containers with agentshim-runtime for the private agentshim under root.
    podman runs the OCI runtime with an empty environment: a wrapper script gives the shim
    the private directories; an empty hooks dir keeps any installed hooks away."""
    shim = root / "agentshim-runtime"
    exports = "".join(f"export {k}='{v}'\n" for k, v in
                      {**private_env(root), "PATH": os.environ["PATH"]}.items())
    shim.write_text(f"#!/bin/sh\n{exports}exec {SHIM} \"$@\"\n")
    shim.chmod(0o755)
    (root / "no-hooks").mkdir()
    return Podman(["podman", "--runtime", str(shim), "--hooks-dir", str(root / "no-hooks")])


ash = agentshim_fixture("ashim-shim", podman=shim_podman)


def assert_gone(ash, cid: str, root: Cgroup | None, slot: Path) -> None:
    if root is not None:
        assert_removed(root)
    assert not slot.exists(), "slot directory left behind"
    assert mounts_mentioning(str(slot), cid) == []
    assert not (ash.state_dir / "hooks" / f"{cid}.json").exists()
    assert list((ash.state_dir / "hooks").glob(f"slot-{slot.name}.json")) == []
    assert (ash.state_dir / "summaries" / f"{cid}.json").exists()
    assert cid not in [x["id"] for x in ash.status()["containers"]]


def test_the_shim_alone_manages_calls_and_delete_cleans_up(ash):
    c = run_container(ash.podman, ash.name(), "--annotation", "io.agentshim.enable=true")
    assert Cgroup.of_pid(detect_layout(), c.pid()).name == "framework"
    root = container_cgroup(c.pid())
    slot = ash.slot_dir(c.id)
    r = c.exec("bash", "-lc", "cat /proc/self/cgroup")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert_in_call(r.stdout, 1)
    assert [x["call"] for x in ash.records(c.id)] == [1]
    # the prestart hook the shim put into config.json, with the shim's environment
    bundle = Path(c.podman("inspect", c.name, "--format", "{{.StaticDir}}").stdout.strip())
    cfg = json.loads((bundle / "config.json").read_text())
    hook = [h for h in cfg["hooks"]["prestart"] if "prestart" in h["args"]]
    assert len(hook) == 1 and f"AGENTSHIM_STATE_DIR={ash.state_dir}" in hook[0]["env"]
    c.rm()  # podman calls the shim's `delete --force`
    assert_gone(ash, c.id, root, slot)


def test_run_rm_through_the_shim_leaves_nothing(ash, tmp_path):
    cid, r = ash.run_rm(tmp_path / "cid", "sh", "-c", "bash -c 'cat /proc/self/cgroup'",
                        podman=ash.podman)
    assert "/tools/call-1" in cgroup_lines(r.stdout)["memory"]
    deadline = time.monotonic() + 10  # the removal runs in podman's cleanup process
    while not (ash.state_dir / "summaries" / f"{cid}.json").exists():
        assert time.monotonic() < deadline, "the shim's delete did not tear down"
        time.sleep(0.05)
    rel = cgroup_lines(r.stdout)["memory"].removesuffix("/tools/call-1")
    assert_gone(ash, cid, Cgroup.at(detect_layout(), rel), ash.run_dir / "slots" / "-")
    assert list((ash.run_dir / "slots").iterdir()) == [], "slot directory left behind"
    assert [x["call"] for x in ash.records(cid)] == [1]


def test_unannotated_containers_pass_through_untouched(ash):
    with run_container(ash.podman, ash.name()) as c:
        bundle = Path(c.podman("inspect", c.name, "--format", "{{.StaticDir}}").stdout.strip())
        cfg = json.loads((bundle / "config.json").read_text())
        assert "io.agentshim.slot" not in (cfg.get("annotations") or {})
        assert not [h for h in (cfg.get("hooks") or {}).get("prestart", [])
                    if "agentshim" in json.dumps(h)]
        assert Cgroup.of_pid(detect_layout(), c.pid()).name.startswith("libpod-")
        assert c.exec("bash", "-c", "echo plain").stdout == "plain\n"


def test_argument_parsing():
    assert find_command(["--root", "/run/runc", "--log=x", "create", "--bundle", "b", "id"]) == 3
    assert find_command(["--debug"]) is None
    assert container_id_of(["--force", "abc"]) == "abc"
    assert container_id_of(["-f"]) is None


def test_prestart_hook_is_added_once():
    cfg: dict = {}
    assert add_prestart_hook(cfg)
    assert not add_prestart_hook(cfg)
    # a hooks.d hook of agentshim already there (podman put it in): none added
    cfg = {"hooks": {"prestart": [{"path": "/usr/bin/agentshim-hook",
                                   "args": ["agentshim-hook", "prestart"]}]}}
    assert not add_prestart_hook(cfg)
    assert len(cfg["hooks"]["prestart"]) == 1
