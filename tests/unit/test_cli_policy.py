"""`agentshim policy validate|show|classify`."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from agentshim.cli.policy import policy
from agentshim.policy import BUILTIN_DEFAULT_PROFILE, load_policy

REPO = Path(__file__).resolve().parents[2]
AGENTSHIM = REPO / ".venv" / "bin" / "agentshim"

BAD = """\
memroy: 1
memory:
  total: abc
on_pressure: [throttle, kill_tool]
freeze_timeout: 0
"""


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


def test_validate_good_file(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(BUILTIN_DEFAULT_PROFILE)
    result = runner.invoke(policy, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{path}: valid"
    assert "  memory: total 4G, framework_protect 256M, tools 3.75G, tool_default 1G" in lines
    assert any(line.startswith("  categories: test 2G, build 2G") for line in lines)
    assert "  on_pressure: throttle -> freeze -> kill_tool; freeze_timeout 30s" in lines


def test_validate_shipped_profile(runner: CliRunner) -> None:
    path = REPO / "packaging" / "profiles" / "default.yaml"
    result = runner.invoke(policy, ["validate", str(path)])
    assert result.exit_code == 0, result.output


def test_validate_bad_file_lists_every_problem(runner: CliRunner, bad_file: Path) -> None:
    result = runner.invoke(policy, ["validate", str(bad_file)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{bad_file}: memroy: unknown key 'memroy' (did you mean 'memory'? known: priority, "
        "memory, categories, on_pressure, freeze_timeout, admission_timeout)",
        f"{bad_file}: memory.total: bad size 'abc' (expected e.g. 512M, 2G)",
        f"{bad_file}: on_pressure: kill_tool needs freeze before it (a tool call is killed only "
        "after it stayed frozen for freeze_timeout)",
        f"{bad_file}: freeze_timeout: must be greater than 0",
    ]


def test_validate_yaml_syntax_error(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("memory:\n  total: [4G\n")
    result = runner.invoke(policy, ["validate", str(path)])
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith(f"{path}: YAML syntax error at line 3, column 1:")


def test_validate_json(runner: CliRunner, bad_file: Path, tmp_path: Path) -> None:
    result = runner.invoke(policy, ["validate", str(bad_file), "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["valid"] is False and doc["policy"] is None
    assert {"field": "memory.total", "message": "bad size 'abc' (expected e.g. 512M, 2G)"} in (
        doc["errors"])
    good = tmp_path / "good.yaml"
    good.write_text("priority: low\n")
    result = runner.invoke(policy, ["validate", str(good), "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["valid"] is True and doc["errors"] == []
    assert doc["policy"]["priority"] == "low"
    assert doc["policy"]["memory"]["tools"] == "3.75G"


def test_validate_stdin(runner: CliRunner) -> None:
    result = runner.invoke(policy, ["validate", "-"], input="priority: urgent\n")
    assert result.exit_code == 1
    assert result.output.startswith("-: priority: bad priority 'urgent'")


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_validate_unreadable_file(runner: CliRunner, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "policy.yaml"
    if kind == "directory":
        path.mkdir()
    result = runner.invoke(policy, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"agentshim policy validate: cannot read {path}: " in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00garbage", b"\x00\x01\x02", b"[[[[[[[[" * 2000, b"- - - :", b"",
     b"!!python/object/apply:os.system ['true']"],
)
def test_validate_garbage_never_tracebacks(runner: CliRunner, tmp_path: Path,
                                           content: bytes) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_bytes(content)
    result = runner.invoke(policy, ["validate", str(path)])
    assert result.exit_code in (0, 1)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def test_show_file_fills_in_defaults(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("memory: {total: 2G}\ncategories: {bench: {match: [make bench]}}\n")
    result = runner.invoke(policy, ["show", str(path)])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.output)
    assert data["memory"] == {"total": "2G", "framework_protect": "256M", "tools": "1.75G",
                              "tool_default": "1G"}
    assert data["categories"]["bench"] == {"match": ["make bench"], "memory": "1G",
                                           "priority": "normal"}
    assert data["freeze_timeout"] == "30s"
    # the shown policy is itself valid and means the same
    assert load_policy(result.output).memory == load_policy(path.read_text()).memory


def test_show_profiles(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(policy, ["show", "--profiles-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == load_policy(BUILTIN_DEFAULT_PROFILE).to_dict(
        effective=True)
    (tmp_path / "big.yaml").write_text("memory: {total: 16G}\n")
    result = runner.invoke(policy, ["show", "--profile", "big", "--profiles-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "total: 16G" in result.output


def test_show_errors(runner: CliRunner, tmp_path: Path, bad_file: Path) -> None:
    result = runner.invoke(policy, ["show", str(bad_file)])
    assert result.exit_code == 1
    assert f"{bad_file}: memory.total: bad size 'abc'" in result.output
    result = runner.invoke(policy, ["show", "--profile", "../etc/passwd",
                                    "--profiles-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "bad profile name '../etc/passwd'" in result.output
    result = runner.invoke(policy, ["show", "--profile", "nope", "--profiles-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"no profile 'nope' in {tmp_path} (available: bad, default)" in result.output
    result = runner.invoke(policy, ["show", str(bad_file), "--profile", "x"])
    assert result.exit_code == 2
    assert "not both" in result.output
    (tmp_path / "broken.yaml").write_text("priority: top\n")
    result = runner.invoke(policy, ["show", "--profile", "broken", "--profiles-dir",
                                    str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'broken.yaml'}: priority: bad priority 'top'" in result.output


def test_classify_claude_code_line(runner: CliRunner, tmp_path: Path) -> None:
    inner = ("source /root/.claude/shell-snapshots/snapshot-bash-1.sh && eval "
             + shlex.quote("python -m pytest tests/ -x")
             + " < /dev/null && pwd -P >| /tmp/claude-ab12-cwd")
    line = shlex.join(["bash", "-c", "-l", inner])
    result = runner.invoke(policy, ["classify", line, "--profiles-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == ["category: test", "grant: memory 2G, priority normal"]
    assert "command: python -m pytest tests/ -x" in lines


def test_classify_with_policy_and_intent(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("memory: {total: 2G}\ncategories: {bench: {match: ['re:^make bench'], "
                    "memory: 1G, priority: low}}\n")
    result = runner.invoke(policy, ["classify", "--policy", str(path), "--", "timeout", "60",
                                    "make", "bench"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == ["category: bench", "grant: memory 1G, priority low"]
    result = runner.invoke(policy, ["classify", "--policy", str(path), "--intent",
                                    "memory=8G,color=red", "pytest", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["category"] == "test"
    assert doc["memory"] == "1.75G" and doc["memory_bytes"] == 1792 * 1024**2
    assert doc["notes"] == ["intent memory 8G reduced to 1.75G (the tools budget)"]
    assert doc["warnings"] == ["intent: ignored 'color=red': unknown key (known: memory, "
                               "priority, category)"]
    assert doc["commands"] == ["pytest"]


def test_classify_bad_quoting_and_bad_policy(runner: CliRunner, bad_file: Path,
                                             tmp_path: Path) -> None:
    result = runner.invoke(policy, ["classify", "echo 'unterminated", "--profiles-dir",
                                    str(tmp_path)])
    assert result.exit_code == 0
    assert result.output.startswith("category: other")
    result = runner.invoke(policy, ["classify", "--policy", str(bad_file), "pytest"])
    assert result.exit_code == 1
    assert f"{bad_file}: memory.total: bad size 'abc'" in result.output


@pytest.mark.skipif(not AGENTSHIM.exists(), reason="no .venv/bin/agentshim")
def test_real_subprocess_validate_bad_file(bad_file: Path) -> None:
    proc = subprocess.run([str(AGENTSHIM), "policy", "validate", str(bad_file)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"{bad_file}: memory.total: bad size 'abc' (expected e.g. 512M, 2G)" in (
        proc.stdout.splitlines())
    assert "Traceback" not in proc.stdout + proc.stderr
    missing = bad_file.parent / "missing.yaml"
    proc = subprocess.run([str(AGENTSHIM), "policy", "validate", str(missing)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"agentshim policy validate: cannot read {missing}: "
                                   "No such file or directory")
