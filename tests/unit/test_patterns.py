"""The linear-time regex engine behind policy ``re:`` patterns (agentshim/patterns.py)."""

from __future__ import annotations

import random
import re
import time

import pytest

from agentshim.patterns import PatternError, compile_pattern
from agentshim.policy import PolicyInvalid, classify, load_policy, validate

# (pattern, adversarial text as (unit, count, tail), expected): each of these takes hours
# (exponential backtracking) with Python's re at 50,000 characters
REDOS = [
    (r"(a|a)*$", ("a", 50_000, "b"), True),  # matches the empty string at the end
    (r"^(a|a)*$", ("a", 50_000, "b"), False),
    (r"^(a|a)*$", ("a", 50_000, ""), True),
    (r"(x+x+)+y", ("x", 50_000, ""), False),
    (r"(x+x+)+y", ("x", 50_000, "y"), True),
    (r"^(\w+\s?)*$", ("word ", 10_000, "!"), False),
    (r"(a+)+\b$", ("a", 50_000, "-"), False),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), REDOS)
def test_catastrophic_patterns_run_in_linear_time(pattern: str, text: tuple[str, int, str],
                                                  expected: bool) -> None:
    unit, count, tail = text
    # Python's re agrees on a short copy (where backtracking still finishes)
    assert (re.search(pattern, unit * 8 + tail) is not None) is expected
    rx = compile_pattern(pattern)
    assert rx.search(unit * 8 + tail) is expected
    text = unit * count + tail
    start = time.perf_counter()
    assert rx.search(text) is expected
    assert time.perf_counter() - start < 1.0


def test_policy_with_a_redos_regex_is_accepted_and_classifies_fast() -> None:
    policy = load_policy({"categories": {"slow": {"match": ["re:^(a|a)*$", "re:(x+x+)+y"]}}})
    start = time.perf_counter()
    # classify reads the first MAX_PATTERN_TEXT (1024) characters of each command
    assert classify("a" * 1000 + "b", policy) == "other"
    assert classify("a" * 1000, policy) == "slow"
    assert classify("x" * 50_000, policy) == "other"
    assert classify("echo " + "x" * 100 + "y", policy) == "slow"
    assert time.perf_counter() - start < 1.0


SAME_AS_RE = [
    r"^make bench\b", r"(a|a)*$", r"(x+x+)+y", r"^cd x$", r".*a.*b.*c", r"[a-z]+(-[a-z]+)*$",
    r"(?i)PYTEST", r"(?i)[^a-c]x", r"\bnpm (run )?test\b", r"a{2,3}b", r"x{", r"x{1}{",
    r"[^\s]+\.py$", r"(?:foo|bar)+", r"[]a]", r"[a\-z]", r"\d{3}", r"a$", r"\Aab\Z", r"a*?b",
    r"(?P<x>ab)c", r"[\w.-]+", r"a\Bb", r"a|", r"(|a)+b", r"a{,2}c", r"[\D_]c", r"\x41|\t",
    r"[.]", r"a.b", r"^$", r"b\n?$",
]


@pytest.mark.parametrize("pattern", SAME_AS_RE)
def test_matches_the_same_texts_as_python_re(pattern: str) -> None:
    rng = random.Random(pattern)
    alphabet = "ab xyzc-.\nA1_\t"
    rx, ref = compile_pattern(pattern), re.compile(pattern)
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert rx.search(text) == (ref.search(text) is not None), (pattern, text)


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        (r"(a)\1", r"backreference or octal escape \1 is not supported"),
        (r"(?P<n>a)(?P=n)", "backreference (?P=name) is not supported"),
        (r"a(?=b)", "lookahead (?=...) is not supported"),
        (r"a(?!b)", "negative lookahead (?!...) is not supported"),
        (r"(?<=a)b", "lookbehind (?<=...) is not supported"),
        (r"(?<!a)b", "negative lookbehind (?<!...) is not supported"),
        (r"(?>a+)b", "atomic group (?>...) is not supported"),
        (r"a*+", "possessive repeat is not supported"),
        (r"(?m)^a", "inline flag or group (?m) is not supported"),
        (r"x(?i)", "inline flag or group (?i) is not supported"),
        (r"\p{L}", r"escape \p is not supported"),
        (r"a**", "multiple repeat"),
        (r"*a", "nothing to repeat"),
        (r"(", "missing ), unterminated subpattern"),
        (r"a)", "unbalanced parenthesis"),
        (r"[a", "unterminated character set"),
        (r"[z-a]", "bad character range"),
        (r"a{3,2}", "min repeat greater than max repeat"),
        (r"a{256}", "repeat count larger than 255"),
        (r"(.{200}){200}", "pattern too large"),
        ("(" * 101 + ")" * 101, "groups nested deeper than 100"),
    ],
)
def test_outside_the_language_is_refused_by_name(pattern: str, fragment: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    assert fragment in str(info.value)


def test_validator_names_the_field_and_the_construct() -> None:
    text = "categories:\n  bench: {match: ['re:^make', 're:(?<=x)y']}\n"
    errors = validate(text)
    assert [(e.field, e.message) for e in errors] == [(
        "categories.bench.match[1]",
        "bad regex '(?<=x)y': lookbehind (?<=...) is not supported (policy regexes run in a "
        "linear-time engine) at position 1",
    )]
    with pytest.raises(PolicyInvalid):
        load_policy(text)
