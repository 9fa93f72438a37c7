"""The hooks' logic on fixture bundles (no podman): config edits, the plan precreate leaves for
prestart, teardown without a daemon, the stage runner's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentshim import hooks, paths


@pytest.fixture
def private(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTSHIM_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("AGENTSHIM_STATE_DIR", str(tmp_path / "state"))
    wrapper = tmp_path / "agentshim-bash"
    wrapper.write_text("#!/bin/true\n")
    monkeypatch.setenv("AGENTSHIM_WRAPPER", str(wrapper))
    return tmp_path


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A Debian-like rootfs: /bin -> usr/bin, bash at /usr/bin/bash."""
    b = tmp_path / "bundle"
    (b / "rootfs" / "usr" / "bin").mkdir(parents=True)
    (b / "rootfs" / "usr" / "bin" / "bash").write_text("bash")
    (b / "rootfs" / "bin").symlink_to("usr/bin")
    return b


def config(policy: str | None = "memory: {total: 1G}") -> dict:
    ann = {"io.agentshim.policy": policy} if policy else {"other": "x"}
    return {"root": {"path": "rootfs"}, "annotations": ann, "mounts": [],
            "process": {"env": ["PATH=/usr/bin", "AGENTSHIM_SOCKET=/evil"]}}


def test_edit_config_mounts_wrapper_over_the_resolved_bash(private, bundle):
    out = hooks.edit_config(config(), bundle=bundle)
    slot = out["annotations"][hooks.ANNOTATION_SLOT]
    dests = {m["destination"]: m["source"] for m in out["mounts"]}
    assert dests["/run/agentshim"] == str(paths.slots_dir() / slot)
    assert dests["/usr/bin/bash"] == str(private / "agentshim-bash")
    real = Path(dests["/run/agentshim/bash.real"])  # a root-owned copy, never the rootfs path
    assert real.parent == paths.state_dir() / "bash" and real.read_text() == "bash"
    assert "/bin/bash" not in dests  # /bin/bash is the same file (symlinked directory)
    assert out["process"]["env"] == ["PATH=/usr/bin", "AGENTSHIM_SOCKET=/run/agentshim/broker.sock",
                                     "AGENTSHIM_REAL_BASH=/run/agentshim/bash.real"]
    plan = json.loads((paths.state_dir() / "hooks" / f"slot-{slot}.json").read_text())
    assert plan["total"] == 1 << 30
    from agentshim.policy import load_policy

    assert load_policy(plan["policy_yaml"]).memory.total == 1 << 30


def test_edit_config_is_idempotent_and_ignores_a_given_slot(private, bundle):
    cfg = config()
    cfg["annotations"][hooks.ANNOTATION_SLOT] = "someone-elses-slot"
    once = hooks.edit_config(cfg, bundle=bundle)
    assert once["annotations"][hooks.ANNOTATION_SLOT] != "someone-elses-slot"
    n = len(once["mounts"])
    twice = hooks.edit_config(json.loads(json.dumps(once)), bundle=bundle)
    assert len(twice["mounts"]) == n and twice == once


def test_unmanaged_config_is_returned_untouched(private, bundle):
    cfg = config(policy=None)
    assert hooks.edit_config(json.loads(json.dumps(cfg)), bundle=bundle) == cfg
    assert not paths.slots_dir().exists()
    assert hooks.prestart({"id": "x", "pid": 1, "annotations": {}}) == "not managed"


def test_bad_policy_is_refused_and_logged(private, bundle):
    rc, out, err = hooks.run_stage("precreate", json.dumps(config("memory: {total: lots}")))
    assert rc == 1 and out == ""
    assert "memory.total: bad size 'lots'" in err
    assert "memory.total" in hooks.refusals_log().read_text()


def test_stage_runner_errors(private):
    assert hooks.run_stage("prestart", "not json")[0] == 1
    assert hooks.run_stage("poststop", "{}")[2].startswith("agentshim: OCI state")
    assert hooks.run_stage("precreate", "[")[2].startswith("agentshim: config.json")
    assert hooks.run_stage("bogus", "{}")[0] == 2
    assert hooks.main(["too", "many"]) == 2


def test_teardown_is_idempotent_and_removes_the_slot_without_a_daemon(private, bundle):
    out = hooks.edit_config(config(), bundle=bundle)
    slot = out["annotations"][hooks.ANNOTATION_SLOT]
    assert (paths.slots_dir() / slot).is_dir()
    # prestart never ran (no record): the slot from the annotations is enough
    state = {"id": "c1", "annotations": {hooks.ANNOTATION_SLOT: slot,
                                         "io.agentshim.policy": "memory: {total: 1G}"}}
    assert hooks.poststop(state) == "cleaned up"
    assert not (paths.slots_dir() / slot).exists()
    assert list((paths.state_dir() / "hooks").glob("*")) == []
    assert hooks.poststop(state) == "nothing to do"
    assert hooks.teardown("../../etc", "../x") == "nothing to do"


def test_read_state_tolerates_bundle_path():
    st = hooks.read_state('{"id": "a", "pid": 3, "bundlePath": "/b"}')
    assert st["bundle"] == "/b"


def test_a_bash_reached_through_a_volume_is_not_wrapped(private, bundle):
    root = bundle / "rootfs"
    (root / "usr" / "bin" / "bash").unlink()
    (root / "data").mkdir()
    (root / "data" / "bash").write_text("bash")
    (root / "usr" / "bin" / "bash").symlink_to("/data/bash")
    cfg = config()
    cfg["mounts"] = [{"destination": "/data", "type": "bind", "source": "/host/dir"}]
    out = hooks.edit_config(cfg, bundle=bundle)
    dests = {m["destination"] for m in out["mounts"]}
    assert "/run/agentshim/bash.real" not in dests and "/data/bash" not in dests
    assert "/run/agentshim" in dests  # still managed as a container; its bash is not wrapped
