"""Property tests: the policy loader/validator and the intent parser never raise anything but
what they document, on any input."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from agentshim.policy import (
    ANNOTATION_ENABLE,
    ANNOTATION_POLICY,
    ANNOTATION_PROFILE,
    Intent,
    Policy,
    PolicyError,
    PolicyInvalid,
    load_policy,
    parse_intent,
    policy_from_annotations,
    validate,
)
from tests.fuzz.seeds import corpus_policies

SEEDS = corpus_policies()
KEYS = ["priority", "memory", "categories", "on_pressure", "freeze_timeout", "total",
        "framework_protect", "tools", "tool_default", "match", "test", "install", "bench"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["4G", "256M", "0", "-1G", "max", "1.5", "30s", "0s", ".inf", "low", "high",
                     "throttle", "freeze", "kill_tool", "re:(a|a)*$", "re:(", "re:^make\\b",
                     "pytest", "", "1e400", "9" * 40 + "G"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers()),
                        inner, max_size=6)),
    max_leaves=30,
)
POLICY_DICTS = st.fixed_dictionaries({}, optional={k: VALUES for k in KEYS[:5]})


def _loads(source: Any) -> Policy | None:
    """load_policy, returning None on the documented PolicyInvalid (any other exception fails
    the test); a PolicyInvalid must carry at least one error with a string field/message."""
    try:
        return load_policy(source)
    except PolicyInvalid as exc:
        assert exc.errors
        assert all(isinstance(e, PolicyError) and isinstance(e.field, str)
                   and isinstance(e.message, str) and e.message for e in exc.errors)
        return None


def _mutations() -> st.SearchStrategy[str]:
    """Seed policies with a slice cut out, a text spliced in, or lines shuffled."""
    def mutate(seed: str, at: int, cut: int, insert: str) -> str:
        i = at % (len(seed) + 1)
        return seed[:i] + insert + seed[i + cut:]
    return st.builds(mutate, st.sampled_from(SEEDS), st.integers(0, 10_000), st.integers(0, 40),
                     st.text(max_size=30))


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_policies_load_or_are_refused(seed: str) -> None:
    policy = _loads(seed)
    assert policy is None or isinstance(policy, Policy)
    assert isinstance(validate(seed), list)


@given(st.one_of(st.text(max_size=400), st.binary(max_size=400), _mutations()))
def test_any_text_loads_or_raises_policy_invalid(text: str | bytes) -> None:
    policy = _loads(text)
    errors = validate(text)
    assert (policy is None) == bool(errors)


@given(POLICY_DICTS)
def test_any_dict_loads_or_raises_policy_invalid(data: dict[str, Any]) -> None:
    policy = _loads(data)
    if policy is not None:
        # a policy that loads is consistent with the rules the validator checks
        assert policy.memory.tools <= policy.memory.total
        assert policy.memory.tool_default <= policy.memory.tools
        # and what it dumps (what the hooks send agentshimd) loads again, to a policy that
        # dumps the same: category order is policy order, so keys must not be sorted; a
        # float may round in its last digit once, never further
        dumped = policy.to_dict()
        again = load_policy(yaml.safe_dump(dumped, sort_keys=False))
        assert again.to_dict() == dumped
        assert [c.name for c in again.categories] == [c.name for c in policy.categories]


@given(POLICY_DICTS)
def test_yaml_of_any_dict_loads_or_raises_policy_invalid(data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    assert (_loads(text) is None) == (_loads(data) is None)


@pytest.mark.parametrize("opener", ["[", "{a: ", "- ", "!!seq [", "&a [", "? "])
def test_deeply_nested_yaml_is_refused_not_crashed(opener: str) -> None:
    with pytest.raises(PolicyInvalid):
        load_policy(opener * 100_000)


_PROFILES = Path(tempfile.mkdtemp(prefix="agentshim-fuzz-profiles-"))
for _i, _seed in enumerate(SEEDS):
    (_PROFILES / f"seed{_i}.yaml").write_text(_seed)
(_PROFILES / "default.yaml").write_text(SEEDS[0])

ANNOTATION_VALUES = st.one_of(
    st.text(max_size=200), _mutations(), st.sampled_from(SEEDS),
    st.builds(lambda s: s.replace("\n", ";"), st.sampled_from(SEEDS)),
    st.builds(lambda b: "base64:" + b, st.text(max_size=60)),
    st.sampled_from(["true", "false", "yes", "maybe", "", " ", "../../etc/passwd", "seed0",
                     "seed1", "default", ".hidden", "x" * 300]),
)


@given(st.dictionaries(
    st.one_of(st.sampled_from([ANNOTATION_POLICY, ANNOTATION_PROFILE, ANNOTATION_ENABLE]),
              st.text(max_size=10)),
    ANNOTATION_VALUES, max_size=4))
def test_any_annotations_give_a_policy_none_or_policy_invalid(annotations: dict[str, str]) -> None:
    try:
        result = policy_from_annotations(annotations, profiles_dir=_PROFILES)
    except PolicyInvalid as exc:
        assert exc.errors
        return
    assert result is None or isinstance(result, Policy)


@given(st.one_of(
    st.none(), st.text(max_size=300),
    st.lists(st.sampled_from(["memory=2G", "priority=low", "category=test", "memory=", "=",
                              "MEMORY = 1.5G", "priority=urgent", "memory=0", "x=y", ",",
                              "memory=99999999999999999999T", "category=a b", "\x00", "\u2028"]),
             max_size=8).map(",".join),
    st.integers(), st.binary(max_size=20),
))
def test_intent_parser_never_raises(text: Any) -> None:
    intent, warnings = parse_intent(text)
    assert isinstance(intent, Intent)
    assert all(isinstance(w, str) and w for w in warnings)
    if intent.memory is not None:
        assert isinstance(intent.memory, int) and intent.memory > 0


def test_overlong_intent_is_cut_with_a_warning() -> None:
    intent, warnings = parse_intent("priority=low," + "x" * 10_000)
    assert intent.priority == "low"
    assert any("longer than" in w for w in warnings)
