"""The policy model, loader, profiles, intents, classification and grants."""

from __future__ import annotations

import random
import shlex
import time
from pathlib import Path

import pytest

from agentshim.policy import (
    BUILTIN_CATEGORIES,
    BUILTIN_DEFAULT_PROFILE,
    LADDER_STEPS,
    Category,
    Intent,
    Policy,
    PolicyError,
    PolicyInvalid,
    available_profiles,
    classify,
    grant,
    load_policy,
    load_profile,
    parse_intent,
    policy_from_annotations,
    real_commands,
    shell_script,
    validate,
)
from agentshim.units import UNLIMITED

M, G = 1024**2, 1024**3
REPO = Path(__file__).resolve().parents[2]

ARCHITECTURE_SKETCH = """\
priority: high            # low | normal | high, decides who is throttled/frozen first
memory:
  total: 4G               # container ceiling
  framework_protect: 256M # memory.low for the agent itself
  tool_default: 1G        # per call unless intent/category says otherwise
categories:               # matched on the command line of the call
  test:    {match: ['pytest', 'tox', 'npm test', 'go test'], memory: 2G}
  install: {match: ['pip install', 'npm install', 'apt-get'], memory: 1G}
on_pressure: [throttle, freeze, kill_tool]   # the ladder; the framework is never killed
freeze_timeout: 30s
"""


def claude(cmd: str) -> str:
    """The command line Claude Code's Bash tool runs for ``cmd``."""
    inner = (
        "source /root/.claude/shell-snapshots/snapshot-bash-1.sh && "
        f"eval {shlex.quote(cmd)} < /dev/null && pwd -P >| /tmp/claude-ab12-cwd"
    )
    return shlex.join(["bash", "-c", "-l", inner])


def codex(cmd: str) -> str:
    """The command line Codex runs for ``cmd``."""
    return shlex.join(["bash", "-lc", cmd])


def fields(errors: list[PolicyError]) -> list[str]:
    return [e.field for e in errors]


# ------------------------------------------------------------------ defaults and valid policies


@pytest.mark.parametrize("empty", ["", "   \n", "# only a comment\n", "null", None, {}])
def test_empty_policy_is_all_defaults(empty: object) -> None:
    policy = load_policy(empty)  # type: ignore[arg-type]
    assert policy == Policy()
    assert policy.priority == "normal"
    assert policy.memory.total == 4 * G
    assert policy.memory.framework_protect == 256 * M
    assert policy.memory.tools == 4 * G - 256 * M
    assert policy.memory.tool_default == 1 * G
    assert policy.on_pressure == LADDER_STEPS
    assert policy.freeze_timeout == 30.0
    assert [c.name for c in policy.categories] == list(BUILTIN_CATEGORIES)


def test_architecture_sketch_is_valid() -> None:
    policy = load_policy(ARCHITECTURE_SKETCH)
    assert policy.priority == "high"
    test = policy.category("test")
    assert test is not None and test.builtin and test.memory == 2 * G
    assert test.match == ("pytest", "tox", "npm test", "go test")
    assert policy.category_memory("install") == 1 * G
    assert policy.category_memory("git") == 1 * G  # no size: tool_default


def test_tools_defaults_to_total_minus_protect_and_tool_default_fits() -> None:
    policy = load_policy({"memory": {"total": "1G", "framework_protect": "512M"}})
    assert policy.memory.tools == 512 * M
    assert policy.memory.tool_default == 512 * M  # 1G default clamped to the budget


def test_numbers_and_case() -> None:
    policy = load_policy("priority: LOW\nmemory: {total: 4294967296}\nfreeze_timeout: 5\n")
    assert policy.priority == "low"
    assert policy.memory.total == 4 * G
    assert policy.freeze_timeout == 5.0


def test_framework_protect_may_be_zero_and_ladder_may_be_empty() -> None:
    policy = load_policy("memory: {framework_protect: 0}\non_pressure: []\n")
    assert policy.memory.tools == policy.memory.total
    assert policy.on_pressure == ()


@pytest.mark.parametrize(
    "ladder", [["throttle"], ["freeze"], ["throttle", "freeze"], ["freeze", "kill_tool"]]
)
def test_good_ladders(ladder: list[str]) -> None:
    assert load_policy({"on_pressure": ladder}).on_pressure == tuple(ladder)


def test_user_categories_come_first_and_extend_builtins() -> None:
    policy = load_policy("""
categories:
  bench: {match: ['re:^make bench'], memory: 3G, priority: low}
  test: {memory: 2G}
""")
    names = [c.name for c in policy.categories]
    assert names[:2] == ["bench", "test"]
    assert set(names) == set(BUILTIN_CATEGORIES) | {"bench"}
    bench = policy.category("bench")
    assert bench == Category("bench", ("re:^make bench",), 3 * G, "low", builtin=False)
    assert policy.category("nope") is None


def test_single_string_match_is_accepted() -> None:
    policy = load_policy({"categories": {"lint": {"match": "ruff check"}}})
    lint = policy.category("lint")
    assert lint is not None and lint.match == ("ruff check",)


def test_to_dict_round_trips() -> None:
    policy = load_policy(ARCHITECTURE_SKETCH)
    assert load_policy(policy.to_dict()) == policy
    effective = policy.to_dict(effective=True)
    assert effective["memory"]["tools"] == "3.75G"
    assert effective["categories"]["git"] == {"memory": "1G", "priority": "high"}
    again = load_policy(effective)
    for name in BUILTIN_CATEGORIES:
        assert again.category_memory(name) == policy.category_memory(name)


def test_policy_is_frozen() -> None:
    policy = Policy()
    with pytest.raises(AttributeError):
        policy.priority = "high"  # type: ignore[misc]


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("memroy: {total: 4G}", "memroy", "unknown key 'memroy' (did you mean 'memory'? known:"),
        ("memory: {totl: 4G}", "memory.totl", "unknown key 'totl'"),
        ("categories: {test: {mem: 1G}}", "categories.test.mem", "known: match, memory, priority"),
        ("1: 2", "1", "unknown key 1"),
        ("priority: urgent", "priority", "bad priority 'urgent' (expected one of: low, normal"),
        ("priority: no", "priority", "got a boolean (false)"),
        ("priority:", "priority", "expected one of"),
        ("memory: {total: abc}", "memory.total", "bad size 'abc' (expected e.g. 512M, 2G)"),
        ("memory: {total: -1G}", "memory.total", "negative"),
        ("memory: {total: 0}", "memory.total", "must be greater than 0"),
        ("memory: {total: max}", "memory.total", "'max' is not allowed"),
        ("memory: {total: 1.5}", "memory.total", "must be whole"),
        ("memory: {total: [4G]}", "memory.total", "expected a size such as 512M or 2G, got a list"),
        ("memory: {total: }", "memory.total", "no value given"),
        ("memory: {total: true}", "memory.total", "got a boolean"),
        ("memory: 4G", "memory", "expected a mapping"),
        ("memory: {tools: 0}", "memory.tools", "must be greater than 0"),
        ("memory: {tool_default: 2Q}", "memory.tool_default", "bad size '2Q'"),
        ("memory: {framework_protect: 4G}", "memory.framework_protect",
         "must be smaller than total (4G)"),
        ("memory: {total: 2G, tools: 3G}", "memory.tools", "3G is larger than total (2G)"),
        ("memory: {tools: 1G, tool_default: 2G}", "memory.tool_default",
         "2G is larger than the tools budget (1G)"),
        ("memory: {total: 1G, tool_default: 2G}", "memory.tool_default",
         "tools budget (768M, which is total - framework_protect)"),
        ("categories: [test]", "categories", "expected a mapping of category name"),
        ("categories: {'bad name': {}}", "categories", "bad category name 'bad name'"),
        ("categories: {a.b: {}}", "categories", "bad category name 'a.b'"),
        ("categories: {test: 2G}", "categories.test", "expected a mapping with keys match"),
        ("categories: {test: {memory: 5G}}", "categories.test.memory",
         "5G is larger than the tools budget (3.75G)"),
        ("categories: {test: {memory: abc}}", "categories.test.memory", "bad size 'abc'"),
        ("categories: {test: {priority: top}}", "categories.test.priority", "bad priority 'top'"),
        ("categories: {t: {match: 3}}", "categories.t.match", "expected a list of patterns"),
        ("categories: {t: {match: [3]}}", "categories.t.match[0]", "expected a pattern string"),
        ("categories: {t: {match: ['']}}", "categories.t.match[0]", "empty pattern"),
        ("categories: {t: {match: ['re:']}}", "categories.t.match[0]", "empty pattern"),
        ("categories: {t: {match: [ok, 're:(']}}", "categories.t.match[1]", "bad regex '('"),
        ("categories: {t: {match: ['re:(a)\\1']}}", "categories.t.match[0]",
         "backreference or octal escape \\1 is not supported (policy regexes run in a "
         "linear-time engine)"),
        ("categories: {t: {match: [ok, 're:make(?= bench)']}}", "categories.t.match[1]",
         "lookahead (?=...) is not supported"),
        ("categories: {t: {match: ['re:(?m)^make']}}", "categories.t.match[0]",
         "inline flag or group (?m) is not supported"),
        ("categories: {t: {match: ['re:" + "x" * 501 + "']}}", "categories.t.match[0]",
         "longer than 500 characters"),
        ("on_pressure: throttle", "on_pressure", "expected a list drawn from throttle, freeze"),
        ("on_pressure: [throttle, restart]", "on_pressure[1]",
         "unknown step 'restart' (known: throttle, freeze, kill_tool)"),
        ("on_pressure: [throttle, kill]", "on_pressure[1]", "did you mean 'kill_tool'?"),
        ("on_pressure: [throttle, 3]", "on_pressure[1]", "expected a step name"),
        ("on_pressure: [freeze, freeze]", "on_pressure[1]", "step 'freeze' is listed twice"),
        ("on_pressure: [freeze, throttle]", "on_pressure",
         "'throttle' must come before 'freeze'"),
        ("on_pressure: [throttle, kill_tool]", "on_pressure", "kill_tool needs freeze before it"),
        ("freeze_timeout: abc", "freeze_timeout", "bad duration 'abc' (expected e.g. 30s"),
        ("freeze_timeout: 0", "freeze_timeout", "must be greater than 0"),
        ("freeze_timeout: 0s", "freeze_timeout", "must be greater than 0"),
        ("freeze_timeout: -1s", "freeze_timeout", "negative"),
        ("freeze_timeout: [1]", "freeze_timeout", "expected a duration such as 30s, got a list"),
        ("freeze_timeout: .inf", "freeze_timeout", "too large"),
    ],
)
def test_each_error_kind(text: str, field: str, fragment: str) -> None:
    errors = validate(text)
    assert field in fields(errors), errors
    message = next(e.message for e in errors if e.field == field)
    assert fragment in message
    with pytest.raises(PolicyInvalid) as info:
        load_policy(text)
    assert info.value.errors == errors


def test_all_problems_are_reported_not_only_the_first() -> None:
    text = """\
priority: urgent
memroy: 1
memory: {total: abc, tool_default: -1G}
categories: {test: {match: ['re:('], memory: lots}}
on_pressure: [throttle, restart, freeze, freeze]
freeze_timeout: never
"""
    errors = validate(text)
    assert fields(errors) == [
        "memroy",
        "priority",
        "memory.total",
        "memory.tool_default",
        "categories.test.match[0]",
        "categories.test.memory",
        "on_pressure[1]",
        "on_pressure[3]",
        "freeze_timeout",
    ]
    with pytest.raises(PolicyInvalid) as info:
        load_policy(text)
    assert len(info.value.errors) == 9
    assert "memory.total: bad size 'abc'" in str(info.value)


def test_yaml_syntax_error_names_line_and_column() -> None:
    errors = validate("priority: normal\nmemory:\n  total: [4G\n")
    assert len(errors) == 1
    assert errors[0].field == ""
    assert errors[0].message.startswith("YAML syntax error at line 4, column 1:")
    assert str(errors[0]) == errors[0].message


def test_tab_indentation_is_a_syntax_error() -> None:
    [error] = validate("memory:\n\ttotal: 4G\n")
    assert "line 2, column 1" in error.message


def test_duplicate_keys_are_errors() -> None:
    [error] = validate("memory: {total: 4G}\npriority: low\nmemory: {total: 2G}\n")
    assert error.message == "duplicate key 'memory' at line 3 (a key may appear once)"


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b", "a list"), ("42", "a number (42)"), ("just text", "a string ('just text')"),
     ("true", "a boolean (true)")],
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    [error] = validate(text)
    assert error.field == ""
    assert error.message.startswith("a policy must be a mapping")
    assert error.message.endswith(f"got {kind}")


@pytest.mark.parametrize(
    "garbage",
    [
        "\x00",
        "a: \x07",
        b"\xff\xfe\x00",
        "[" * 5000,
        "{" * 3000 + "}" * 3000,
        "a: &x [*x]",
        "memory: &m {total: *m}",
        "? [a, b]\n: 1",
        "!!python/object/apply:os.system ['true']",
        "--- a\n--- b\n",
        "%YAML 9.9\n---\na: 1",
        "priority: *undefined",
        "memory: {total: 99999999999999999999999999}",
        "categories: {test: {match: [[[[]]]]}}",
        "on_pressure: [{}, [], null]",
        "memory: {total: !!binary AAAA}",
        "freeze_timeout: 2001-01-01",
        ":::\n- - -\n  ? ?",
        "x" * (1024 * 1024 + 1),
        42,
        3.5,
        ["a"],
        object(),
    ],
)
def test_garbage_never_raises(garbage: object) -> None:
    errors = validate(garbage)
    assert errors and all(isinstance(e, PolicyError) for e in errors)
    with pytest.raises(PolicyInvalid):
        load_policy(garbage)  # type: ignore[arg-type]


def test_random_garbage_never_raises() -> None:
    rng = random.Random(1234)
    alphabet = "abcdemorytl{}[]:,-!&*|>'\"#%@`?\n\t 0123456789GMK."
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        for error in validate(text):
            assert isinstance(error, PolicyError)


def test_unsafe_tags_are_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    [error] = validate(f"!!python/object/apply:os.system ['touch {marker}']")
    assert "could not determine a constructor" in error.message
    assert not marker.exists()


# ------------------------------------------------------------------ profiles


def test_shipped_default_profile_equals_builtin() -> None:
    shipped = (REPO / "packaging" / "profiles" / "default.yaml").read_text()
    assert validate(shipped) == []
    assert load_policy(shipped) == load_policy(BUILTIN_DEFAULT_PROFILE)


def test_builtin_default_profile_when_directory_has_none(tmp_path: Path) -> None:
    policy = load_profile("default", tmp_path)
    assert policy == load_policy(BUILTIN_DEFAULT_PROFILE)
    assert policy.category_memory("test") == 2 * G
    assert load_profile("default", tmp_path / "missing-dir") == policy


def test_profile_from_directory(tmp_path: Path) -> None:
    (tmp_path / "fast.yaml").write_text("priority: high\nmemory: {total: 8G}\n")
    (tmp_path / "default.yaml").write_text("priority: low\n")
    assert load_profile("fast", tmp_path).memory.total == 8 * G
    assert load_profile("default", tmp_path).priority == "low"  # the site's default wins
    assert available_profiles(tmp_path) == ["default", "fast"]


def test_missing_profile_lists_available_ones(tmp_path: Path) -> None:
    (tmp_path / "fast.yaml").write_text("priority: high\n")
    (tmp_path / "slow.yaml").write_text("priority: low\n")
    with pytest.raises(PolicyInvalid) as info:
        load_profile("medium", tmp_path)
    [error] = info.value.errors
    assert error.field == "profile"
    assert error.message == f"no profile 'medium' in {tmp_path} (available: default, fast, slow)"


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "..", ".", ".hidden", "a/b", "/etc/shadow", "a\\b", "", "x" * 200,
     "a b", "na\x00me", "fast.yaml/..", "~root"],
)
def test_profile_names_cannot_traverse(tmp_path: Path, name: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.yaml").write_text("priority: low\n")
    with pytest.raises(PolicyInvalid) as info:
        load_profile(name, tmp_path / "sub")
    assert info.value.errors[0].field == "profile"
    assert "bad profile name" in info.value.errors[0].message


def test_profile_names_may_have_dots_and_dashes(tmp_path: Path) -> None:
    (tmp_path / "team-a.v2_big.yaml").write_text("priority: high\n")
    assert load_profile("team-a.v2_big", tmp_path).priority == "high"


def test_invalid_profile_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("memory: {total: lots}\n")
    with pytest.raises(PolicyInvalid) as info:
        load_profile("broken", tmp_path)
    assert info.value.source == str(tmp_path / "broken.yaml")
    assert info.value.errors[0].field == "memory.total"


def test_unreadable_profile(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(PolicyInvalid) as info:
        load_profile("dir", tmp_path)
    assert "cannot read" in info.value.errors[0].message


# ------------------------------------------------------------------ annotations


def test_annotations_precedence(tmp_path: Path) -> None:
    (tmp_path / "fast.yaml").write_text("priority: high\n")
    inline = {"io.agentshim.policy": "priority: low", "io.agentshim.profile": "fast",
              "io.agentshim.enable": "true"}
    assert policy_from_annotations(inline, tmp_path).priority == "low"  # type: ignore[union-attr]
    del inline["io.agentshim.policy"]
    assert policy_from_annotations(inline, tmp_path).priority == "high"  # type: ignore[union-attr]
    del inline["io.agentshim.profile"]
    assert policy_from_annotations(inline, tmp_path) == load_policy(BUILTIN_DEFAULT_PROFILE)


def test_blank_inline_policy_falls_through(tmp_path: Path) -> None:
    assert policy_from_annotations({"io.agentshim.policy": "  "}, tmp_path) is None
    got = policy_from_annotations({"io.agentshim.policy": "", "io.agentshim.enable": "1"},
                                  tmp_path)
    assert got == load_policy(BUILTIN_DEFAULT_PROFILE)


@pytest.mark.parametrize(
    "annotations",
    [{}, {"io.agentshim.enable": "false"}, {"io.agentshim.enable": "0"},
     {"io.agentshim.enable": "no"}, {"io.agentshim.enable": ""}, {"other": "x"}],
)
def test_unmanaged_containers(annotations: dict[str, str], tmp_path: Path) -> None:
    assert policy_from_annotations(annotations, tmp_path) is None


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on", " true "])
def test_enable_values(value: str, tmp_path: Path) -> None:
    assert policy_from_annotations({"io.agentshim.enable": value}, tmp_path) is not None


def test_bad_annotations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid) as info:
        policy_from_annotations({"io.agentshim.policy": "memory: {total: abc}"}, tmp_path)
    assert info.value.source == "annotation io.agentshim.policy"
    assert info.value.errors[0].field == "memory.total"
    with pytest.raises(PolicyInvalid) as info:
        policy_from_annotations({"io.agentshim.profile": "../../etc/passwd"}, tmp_path)
    assert "bad profile name" in str(info.value)
    with pytest.raises(PolicyInvalid) as info:
        policy_from_annotations({"io.agentshim.profile": "nope"}, tmp_path)
    assert "available: default" in str(info.value)
    with pytest.raises(PolicyInvalid) as info:
        policy_from_annotations({"io.agentshim.enable": "maybe"}, tmp_path)
    assert info.value.errors[0].field == "io.agentshim.enable"


# ------------------------------------------------------------------ intents


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("memory=2G,priority=low,category=test", Intent(2 * G, "low", "test")),
        ("memory=512M", Intent(memory=512 * M)),
        (" memory = 1.5G , priority = HIGH ", Intent(memory=3 * G // 2, priority="high")),
        ("category=bench,", Intent(category="bench")),
        ("memory=max", Intent(memory=UNLIMITED)),
        ("", Intent()),
        (None, Intent()),
    ],
)
def test_good_intents(text: str | None, intent: Intent) -> None:
    assert parse_intent(text) == (intent, [])


@pytest.mark.parametrize(
    ("text", "intent", "fragment"),
    [
        ("memory=lots", Intent(), "ignored 'memory=lots': bad size 'lots'"),
        ("memory=-1G,priority=low", Intent(priority="low"), "negative"),
        ("memory=0", Intent(), "memory must be greater than 0"),
        ("priority=urgent,memory=1G", Intent(memory=G), "ignored 'priority=urgent'"),
        ("color=red", Intent(), "unknown key (known: memory, priority, category)"),
        ("memory", Intent(), "expected key=value"),
        ("category=../x", Intent(), "bad category name"),
        ("memory=1G,memory=2G", Intent(memory=2 * G), "memory given twice"),
        ("x" * 5000, Intent(), "longer than 4096"),
    ],
)
def test_bad_intent_parts_are_dropped_with_a_warning(
    text: str, intent: Intent, fragment: str
) -> None:
    got, warnings = parse_intent(text)
    assert got == intent
    assert any(fragment in w for w in warnings), warnings


@pytest.mark.parametrize("garbage", [",,,", "=", "==,=", "\x00=\x00", "memory==2G", 42, b"x"])
def test_intent_never_raises(garbage: object) -> None:
    intent, warnings = parse_intent(garbage)  # type: ignore[arg-type]
    assert isinstance(intent, Intent)
    assert all(isinstance(w, str) for w in warnings)


# ------------------------------------------------------------------ classification

BRIEF_EXAMPLE = (
    "bash -c -l 'source /root/.claude/shell-snapshots/snapshot-bash-1.sh && eval "
    "'\"'\"'python -m pytest tests/ -x'\"'\"' < /dev/null && pwd -P >| /tmp/claude-ab12-cwd'"
)

CASES: dict[str, list[str]] = {
    "test": [
        BRIEF_EXAMPLE,
        claude("pytest -q tests/unit"),
        claude("cd /workspace/repo && python -m pytest tests/test_api.py::test_get -x 2>&1 "
               "| tail -30"),
        claude("timeout 600 pytest"),
        claude("PYTHONPATH=src FOO=1 pytest -k 'not slow'"),
        claude("uv run pytest"),
        claude("tox -e py311"),
        claude("nox -s tests"),
        claude("npm test"),
        claude("npm run test:unit -- --watch=false"),
        claude("yarn test"),
        claude("go test ./... -run TestFoo"),
        claude("cargo test --workspace"),
        claude("make test"),
        claude("make -C build check"),
        claude("python -m unittest discover -s tests"),
        claude("python3 -m unittest tests.test_x"),
        claude("npx jest src/"),
        claude("python manage.py test"),
        claude("if pytest -q; then echo ok; fi"),
        codex("pytest -q"),
        codex("cd repo && python -m pytest -q tests/test_cli.py"),
        "pytest",
        "env CI=1 timeout -s KILL 60 pytest -x",
    ],
    "install": [
        claude("pip install -r requirements.txt"),
        claude("pip3 install --user requests"),
        claude("python -m pip install -e '.[test]'"),
        claude("uv pip install numpy"),
        claude("poetry install --no-root"),
        claude("npm install"),
        claude("npm ci"),
        claude("yarn add lodash"),
        claude("apt-get update && apt-get install -y libpq-dev"),
        claude("sudo apt install -y ripgrep"),
        claude("cd frontend && npm i"),
        codex("pip install pytest-asyncio"),
    ],
    "build": [
        claude("make"),
        claude("make -j8 all"),
        claude("cmake -S . -B build && cmake --build build -j"),
        claude("gcc -O2 -o main main.c"),
        claude("cargo build --release"),
        claude("go build ./cmd/server"),
        claude("npm run build"),
        claude("tsc --noEmit"),
        claude("npx tsc -p ."),
        claude("mvn -q package -DskipTests"),
        claude("./gradlew assemble"),
        codex("cargo check"),
    ],
    "python": [
        claude("python -c 'import sys; print(sys.version)'"),
        claude("python3 - <<'EOF'\nimport json\nprint(json.dumps({'a': 1}))\nEOF"),
        claude("python3 <<EOF\nprint(1)\nEOF"),
        claude("python script.py --flag"),
        claude("cd /repo && python3 tools/gen.py > out.txt"),
        claude("/usr/bin/python3.11 -u run.py"),
        codex("python - <<'PY'\nfrom pathlib import Path\nprint(Path('.').resolve())\nPY"),
    ],
    "git": [
        claude("git status"),
        claude("git diff HEAD~1 -- src/ | head -100"),
        claude("cd /repo && git log --oneline -20"),
        claude("git -C repo add -A && git commit -m 'fix: thing'"),
        codex("git show HEAD --stat"),
    ],
    "file_ops": [
        claude("ls -la"),
        claude("cat src/main.py"),
        claude("grep -rn 'def main' src/"),
        claude("rg -n 'TODO' --type py"),
        claude("find . -name '*.py' -not -path './.venv/*' | head -50"),
        claude("sed -n '1,80p' README.md"),
        claude("head -n 20 log.txt && tail -n 5 log.txt"),
        claude("wc -l src/*.py"),
        claude("mkdir -p out && cp a.txt out/ && mv out/a.txt out/b.txt && rm -f tmp.txt"),
        codex("rg --files | wc -l"),
        codex("apply_patch <<'EOF'\n*** Begin Patch\n*** Update File: a.py\n+import os\n"
              "*** End Patch\nEOF"),
        codex("sed -n '1,200p' src/app.py"),
    ],
    "other": [
        claude("echo hello"),
        claude("pwd"),
        claude("cd /tmp"),
        claude("node server.js"),
        claude("curl -s http://localhost:8000/health"),
        "",
        "   ",
        "export FOO=1",
    ],
}


@pytest.mark.parametrize(
    ("category", "line"),
    [(category, line) for category, lines in CASES.items() for line in lines],
)
def test_builtin_classification(category: str, line: str) -> None:
    assert classify(line) == category, real_commands(line)


def test_every_builtin_category_is_exercised() -> None:
    assert set(CASES) == set(BUILTIN_CATEGORIES)


def test_brief_example_unwraps_to_the_real_command() -> None:
    assert real_commands(BRIEF_EXAMPLE) == [
        ["source", "/root/.claude/shell-snapshots/snapshot-bash-1.sh"],
        ["python", "-m", "pytest", "tests/", "-x"],
        ["pwd", "-P"],
    ]


def test_argv_sequences_are_accepted() -> None:
    assert classify(["bash", "-lc", "cargo test"]) == "test"
    assert real_commands(["/bin/bash", "-c", "FOO=1 git status"]) == [["git", "status"]]


def test_most_demanding_command_wins() -> None:
    assert classify("pip install -e . && pytest -q") == "test"
    assert classify("git diff | grep foo") == "git"
    assert classify("ls && python x.py") == "python"


@pytest.mark.parametrize(
    "line",
    ["echo 'unterminated", 'echo "unterminated', "eval", "bash -c", "bash -lc 'eval \"",
     "$(", "`", "((((", "'\"'\"'", "\\", "cat <<EOF", "2>&1", "<", "| | &&", "\x00",
     "x" * 300_000, "bash -c " * 500 + "pytest", "eval " * 200 + "pytest"],
)
def test_bad_quoting_never_crashes(line: str) -> None:
    assert classify(line) in BUILTIN_CATEGORIES
    assert isinstance(real_commands(line), list)


def test_random_command_lines_never_crash() -> None:
    rng = random.Random(99)
    alphabet = "abc pytest git ls 'x' \"y\" \\ $ ( ) ` | & ; < > \n = # { } - -c eval bash <<"
    tokens = alphabet.split(" ") + [" ", "'", '"', "\n"]
    for _ in range(2000):
        line = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 30)))
        assert classify(line) in BUILTIN_CATEGORIES


def test_user_categories_are_checked_first() -> None:
    policy = load_policy("""
categories:
  bench: {match: ['re:^make bench\\b', 'pytest --benchmark'], memory: 3G}
  db: {match: [psql], memory: 512M}
  test: {match: [./run-checks.sh]}
""")
    assert classify(claude("make bench"), policy) == "bench"
    assert classify(claude("make benchmarks"), policy) == "build"  # regex word boundary
    assert classify(claude("timeout 60 pytest --benchmark-only"), policy) == "bench"
    assert classify(claude("pytest -q"), policy) == "test"
    assert classify("cd x && ./run-checks.sh", policy) == "test"  # extends the built-in
    assert classify(codex("PGPASSWORD=x psql -c 'select 1'"), policy) == "db"
    assert classify("git status", policy) == "git"


def test_user_regexes_cannot_stall_classification() -> None:
    policy = load_policy({"categories": {"slow": {"match": [r"re:.*a.*b.*c.*d"]}}})
    start = time.perf_counter()
    assert classify("timeout 5 " + "a" * 200_000, policy) == "other"
    assert time.perf_counter() - start < 5


def test_patterns_see_each_real_command_on_its_own() -> None:
    policy = load_policy({"categories": {"snap": {"match": ["re:^source "]},
                                         "pw": {"match": ["re:^pwd"]}}})
    # the wrapper's own commands are real commands too, but anchored user patterns only see
    # each command on its own
    assert classify(claude("ls"), policy) == "snap"
    policy = load_policy({"categories": {"cdx": {"match": ["re:^cd x$"]}}})
    assert classify("cd x && pytest", policy) == "cdx"
    assert classify("cd y && pytest", policy) == "test"


# ------------------------------------------------------------------ grants


@pytest.fixture()
def default_policy() -> Policy:
    return load_policy(BUILTIN_DEFAULT_PROFILE)


def test_grant_uses_category_memory(default_policy: Policy) -> None:
    assert grant(default_policy, "test", None) == (2 * G, "normal", [])
    assert grant(default_policy, "git", Intent()) == (512 * M, "normal", [])
    assert grant(default_policy, "other", None) == (1 * G, "normal", [])


def test_grant_uses_tool_default_without_category_size() -> None:
    policy = load_policy("memory: {tool_default: 700M}")
    memory, priority, notes = grant(policy, "test", None)
    assert (memory, priority, notes) == (700 * M, "normal", [])


def test_grant_honours_intent_memory(default_policy: Policy) -> None:
    intent, _ = parse_intent("memory=3G")
    assert grant(default_policy, "git", intent).memory == 3 * G
    intent, _ = parse_intent("memory=100M")
    assert grant(default_policy, "test", intent).memory == 100 * M


def test_grant_clamps_intent_memory_to_tools_budget(default_policy: Policy) -> None:
    memory, _, notes = grant(default_policy, "test", Intent(memory=8 * G))
    assert memory == default_policy.memory.tools
    assert notes == ["intent memory 8G reduced to 3.75G (the tools budget)"]
    memory, _, notes = grant(default_policy, "test", Intent(memory=UNLIMITED))
    assert memory == default_policy.memory.tools
    assert notes == ["intent memory max reduced to 3.75G (the tools budget)"]


def test_grant_priority_rules() -> None:
    policy = load_policy("priority: normal\ncategories: {build: {priority: high}, "
                         "git: {priority: low}}")
    assert grant(policy, "build", None).priority == "high"
    assert grant(policy, "git", None).priority == "low"
    assert grant(policy, "test", Intent(priority="low")) == (G, "low", [])
    memory, priority, notes = grant(policy, "test", Intent(priority="high"))
    assert priority == "normal"
    assert notes == ["intent priority high is above the policy's normal; kept normal"]
    assert grant(policy, "build", Intent(priority="high")).priority == "high"


def test_grant_intent_category(default_policy: Policy) -> None:
    got = grant(default_policy, "other", Intent(category="test"))
    assert got.memory == 2 * G
    assert got.notes == ["category test from intent (command looked like other)"]
    got = grant(default_policy, "git", Intent(category="nope"))
    assert got.memory == 512 * M
    assert "not in the policy" in got.notes[0]


def test_grant_unknown_category_is_other(default_policy: Policy) -> None:
    got = grant(default_policy, "mystery", None)
    assert got.memory == default_policy.category_memory("other")
    assert got.notes == ["unknown category 'mystery'; treated as other"]


@pytest.mark.parametrize(("argv", "script"), [
    (["bash", "-c", "-l", "X"], "X"),            # Claude Code
    (["bash", "-lc", "Y"], "Y"),                 # Codex
    (["bash", "--login", "-c", "Z"], "Z"),
    (["bash", "-o", "pipefail", "-c", "W"], "W"),
    (["bash", "+c", "P"], "P"),                  # bash takes +c as -c
    (["bash", "-ooc", "pipefail", "errexit", "Q"], "Q"),  # each o takes a word
    (["bash", "script.sh"], None),
    (["bash", "-c"], None),
])
def test_shell_script_follows_bash_options(argv, script):
    assert shell_script(argv) == script
