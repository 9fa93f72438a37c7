"""Property tests: the bash option/script lexers and the categorizer of a tool call's command
line never raise and always answer with a known category; the regex engine agrees with re."""

from __future__ import annotations

import re
import shlex
import warnings

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agentshim.patterns import PatternError, compile_pattern
from agentshim.policy import BUILTIN_CATEGORIES, classify, load_policy, real_commands, shell_script
from tests.fuzz.seeds import corpus_commands

COMMANDS = corpus_commands()
POLICY = load_policy({"categories": {
    "bench": {"match": ["re:^make bench\\b", "pytest --benchmark"]},
    "slow": {"match": ["re:(a|a)*$x", "re:(x+x+)+y"]},
}})
KNOWN = set(BUILTIN_CATEGORIES) | {c.name for c in POLICY.categories}

SHELL_BITS = st.sampled_from([
    " ", "'", '"', "\\", "$", "(", ")", "`", "|", "&", ";", "<", ">", "\n", "=", "#", "{", "}",
    "-c", "-lc", "-c -l", "--login", "--", "eval ", "bash ", "sh -c ", "<<", "<<-EOF\n", "EOF",
    "$(", "$((", "${", "pytest", "python -m pytest", "npm test", "pip install", "git status",
    "cd x && ", "timeout 60 ", "env A=1 ", "sudo ", "xargs ", "nohup ", "exec ", "source ",
])
SHELLISH = st.lists(st.one_of(SHELL_BITS, st.text(max_size=4)), max_size=40).map("".join)
ARGV = st.lists(st.one_of(SHELL_BITS, st.text(max_size=10)), max_size=8)


def _mutated(seed: str, at: int, cut: int, insert: str) -> str:
    i = at % (len(seed) + 1)
    return seed[:i] + insert + seed[i + cut:]


MUTATED = st.builds(_mutated, st.sampled_from(COMMANDS), st.integers(0, 2000),
                    st.integers(0, 20), SHELLISH)


@pytest.mark.parametrize("line", COMMANDS)
def test_corpus_lines_classify(line: str) -> None:
    assert classify(line) in BUILTIN_CATEGORIES
    assert classify(line, POLICY) in KNOWN
    assert all(isinstance(w, str) for words in real_commands(line) for w in words)


@given(st.one_of(SHELLISH, MUTATED, st.text(max_size=300)))
@example("bash -c " + "(" * 100_000)
@example("bash -c '" + "$(" * 20_000 + "'")
@example("eval " * 5_000 + "pytest")
@example("bash -c " + shlex.quote("bash -c " * 2_000 + "pytest"))
@example("cat <<EOF\n" + "x\n" * 10_000)
def test_classify_any_line_never_raises(line: str) -> None:
    assert classify(line) in BUILTIN_CATEGORIES
    assert classify(line, POLICY) in KNOWN
    commands = real_commands(line)
    assert isinstance(commands, list)
    assert all(isinstance(words, list) and all(isinstance(w, str) for w in words)
               for words in commands)


@given(ARGV)
@example(["bash", "-o"])
@example(["bash", "-c"])
@example(["bash", "--rcfile"])
@example(["bash", "-lc", "pytest"])
def test_argv_forms_never_raise(argv: list[str]) -> None:
    assert classify(argv) in BUILTIN_CATEGORIES
    script = shell_script(argv)
    assert script is None or isinstance(script, str)
    assert isinstance(real_commands(argv), list)


@given(st.sampled_from(["-c", "-lc", "-cl", "-l -c", "--login -c", "-ic", "+c"]), ARGV)
def test_c_anywhere_in_a_cluster_is_a_script(option: str, rest: list[str]) -> None:
    script = "pytest -q"
    argv = ["bash", *option.split(), script, *rest]
    assert shell_script(argv) == script


REGEX_BITS = st.sampled_from([
    "a", "b", "x", " ", ".", "*", "+", "?", "|", "(", ")", "(?:", "[", "]", "^", "$", "-",
    "\\b", "\\d", "\\w", "\\s", "\\.", "{", "}", "{2}", "{1,3}", ",", "[^a]", "[a-z]", "\\",
])
REGEXES = st.lists(REGEX_BITS, min_size=1, max_size=12).map("".join)


@given(REGEXES, st.text(alphabet="abx -.1_\n", max_size=20))
@example("(a|a)*$", "aaaab")
@example("\\bx\\b", "a x")
def test_engine_agrees_with_python_re(pattern: str, text: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "possible nested set"
            ref = re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        ref = None
    try:
        mine = compile_pattern(pattern)
    except PatternError:
        return  # refused: fine (a subset of re, or malformed)
    assert ref is not None, f"accepted a pattern re refuses: {pattern!r}"
    assert mine.search(text) == (ref.search(text) is not None)


@given(st.text(max_size=60))
def test_any_pattern_text_compiles_or_raises_pattern_error(pattern: str) -> None:
    try:
        rx = compile_pattern(pattern)
    except PatternError as exc:
        assert str(exc)
        return
    assert rx.search(pattern) in (True, False)
