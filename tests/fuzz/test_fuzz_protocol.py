"""Property tests: the broker protocol's decode raises only ProtocolError on any bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agentshim.protocol import ProtocolError, decode, encode

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
REQUEST = st.fixed_dictionaries({"op": st.sampled_from(["start", "end", "status"])},
                                optional={"argv": st.lists(st.text(max_size=20), max_size=4),
                                          "intent": st.text(max_size=30), "seq": st.integers()})


def _decodes(line: bytes) -> dict | None:
    try:
        obj = decode(line)
    except ProtocolError as exc:
        assert str(exc)
        return None
    assert isinstance(obj, dict)
    return obj


@given(st.binary(max_size=500))
@example(b"")
@example(b"\xff\xfe{}")
@example(b'{"a": 1e99999}')
@example(b"1" * 5000)
@example(b'{"a": ' + b"1" * 5000 + b"}")
@example(b'{"a": NaN, "b": -Infinity}')
def test_any_bytes_decode_or_raise_protocol_error(line: bytes) -> None:
    _decodes(line)


@given(JSON)
def test_any_json_value_decodes_only_when_an_object(value: object) -> None:
    line = json.dumps(value).encode()
    assert (_decodes(line) is None) == (not isinstance(value, dict))


@given(REQUEST)
def test_encode_then_decode_round_trips(obj: dict) -> None:
    line = encode(obj)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line[:-1]) == obj


@given(REQUEST, st.integers(0, 200), st.binary(max_size=8))
def test_truncated_or_corrupted_requests_raise_protocol_error(obj: dict, at: int,
                                                               junk: bytes) -> None:
    line = encode(obj)[:-1]
    cut = line[:at % max(len(line), 1)] + junk
    _decodes(cut)


@pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b'{"a":', b"}"), (b'{"a":[', b"]}")])
def test_deeply_nested_json_raises_protocol_error(opener: bytes, closer: bytes) -> None:
    for line in (opener * 100_000, opener * 100_000 + b"1" + closer * 100_000):
        with pytest.raises(ProtocolError):
            decode(line)
