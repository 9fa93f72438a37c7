"""Sizes and durations: agentshim.units."""

from __future__ import annotations

import pytest

from agentshim.units import (
    UNLIMITED,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

K, M, G, T = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * M),
        ("2G", 2 * G),
        ("1.5G", 3 * G // 2),
        ("1024", 1024),
        ("100k", 100 * K),
        ("100K", 100 * K),
        ("1T", T),
        ("512MB", 512 * M),
        ("512MiB", 512 * M),
        ("512mib", 512 * M),
        ("2gb", 2 * G),
        ("64B", 64),
        ("0", 0),
        (" 4G ", 4 * G),
        ("4 G", 4 * G),
        (".5G", G // 2),
        ("0.3k", 307),  # fractions of a unit are rounded down to whole bytes
        (4096, 4096),
        ("max", UNLIMITED),
        ("MAX", UNLIMITED),
    ],
)
def test_parse_size_good(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("abc", "bad size 'abc' (expected e.g. 512M, 2G)"),
        ("", "bad size ''"),
        ("1GG", "bad size '1GG'"),
        ("2X", "bad size '2X'"),
        ("1e3", "bad size '1e3'"),
        ("G", "bad size 'G'"),
        ("1.5", "must be whole"),
        ("-1G", "negative"),
        ("-5", "negative"),
        (-5, "negative"),
        ("+5G", "bad size '+5G'"),
        ("99999999T", "too large"),
        (2**64, "too large"),
        (None, "bad size None"),
        (True, "bad size True"),
        ([1], "bad size [1]"),
    ],
)
def test_parse_size_bad(text: object, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_parse_size_long_garbage_is_shortened_in_message() -> None:
    with pytest.raises(ValueError) as info:
        parse_size("x" * 10_000)
    assert len(str(info.value)) < 120


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (512 * M, "512M"),
        (2 * G, "2G"),
        (3 * G // 2, "1.5G"),
        (4 * G - 256 * M, "3.75G"),
        (100 * K, "100K"),
        (1000, "1000"),
        (1025, "1025"),
        (0, "0"),
        (T, "1T"),
        (UNLIMITED, "max"),
    ],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


@pytest.mark.parametrize("n", [0, 1, 1023, 1024, 1395864371, 5 * G + 1, 7 * T + 3 * M, UNLIMITED])
def test_format_size_round_trips(n: int) -> None:
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize("bad", [-1, 1.5, None, True])
def test_format_size_refuses_non_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        format_size(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("10", 10.0),
        ("0.25", 0.25),
        ("30S", 30.0),
        (" 2 m ", 120.0),
        ("0", 0.0),
        (15, 15.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_good(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("abc", "bad duration 'abc' (expected e.g. 30s, 500ms, 2m, 1h)"),
        ("", "bad duration ''"),
        ("30x", "bad duration '30x'"),
        ("s", "bad duration 's'"),
        ("1e3", "bad duration '1e3'"),
        ("-5s", "negative"),
        ("-1", "negative"),
        (-1, "negative"),
        (float("nan"), "bad duration"),
        (float("inf"), "too large"),
        ("9" * 400 + "h", "too large"),
        (None, "bad duration None"),
        (True, "bad duration True"),
    ],
)
def test_parse_duration_bad(text: object, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)  # type: ignore[arg-type]
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30.0, "30s"), (0.5, "500ms"), (120.0, "2m"), (3600, "1h"), (90.0, "90s"), (1.5, "1.5s"),
     (0.0, "0ms")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
