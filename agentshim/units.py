"""Sizes and durations as people write them in policies, intents and on the command line.

Sizes use binary units: ``K``/``M``/``G``/``T`` are powers of 1024, case-insensitive, with an
optional trailing ``B`` or ``iB`` (``512M`` == ``512MB`` == ``512MiB`` == ``512mib``). A plain
number is a count of bytes. ``max`` (as in cgroup files) means "no limit" and is returned as the
int sentinel :data:`UNLIMITED`, so every parsed size is an ``int`` and compares naturally.

Durations are a number followed by ``ms``, ``s``, ``m`` or ``h`` (``500ms``, ``30s``, ``1.5s``,
``2m``, ``1h``), several of them in a row (``1m30s``), or a plain number of seconds.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Final

#: Byte multiples, named once: MIB (2**20) is what sizes in policies, budgets and cgroup
#: limits mean by "M"; MB (10**6) is the decimal megabyte of the shared traces' reports,
#: podman's output and the study.
MIB: Final[int] = 1 << 20
MB: Final[int] = 1_000_000

#: What ``parse_size("max")`` returns: larger than any real size, formatted back as ``max``.
UNLIMITED: Final[int] = 2**63 - 1

_UNITS: Final[dict[str, int]] = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)?", re.IGNORECASE)
_SIZE_HINT = "expected e.g. 512M, 2G"

_DUR_UNITS: Final[dict[str, float]] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DUR_PART = r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)"
_DUR_RE = re.compile(rf"(?:{_DUR_PART}\s*)+", re.IGNORECASE)
_DUR_PART_RE = re.compile(_DUR_PART, re.IGNORECASE)
_PLAIN_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_DUR_HINT = "expected e.g. 30s, 500ms, 2m, 1h"


def _shown(value: object) -> str:
    """repr of a user value, shortened so messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "...'"


def parse_size(text: str | int) -> int:
    """Parse a size such as ``512M``, ``1.5G``, ``100k`` or ``1024`` into bytes.

    ``max`` gives :data:`UNLIMITED`. Fractions of a unit are rounded down to whole bytes; a
    plain number must be whole. Raises ValueError naming the bad text and the expected form.
    """
    if isinstance(text, bool):
        raise ValueError(f"bad size {_shown(text)} ({_SIZE_HINT})")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"bad size {text}: negative sizes are not allowed")
        if text > UNLIMITED:
            raise ValueError(f"bad size {text}: too large")
        return text
    if not isinstance(text, str):
        raise ValueError(f"bad size {_shown(text)} ({_SIZE_HINT})")
    stripped = text.strip()
    if stripped.lower() == "max":
        return UNLIMITED
    if stripped.startswith("-") and _SIZE_RE.fullmatch(stripped[1:].strip()):
        raise ValueError(f"bad size {_shown(text)}: negative sizes are not allowed")
    match = _SIZE_RE.fullmatch(stripped)
    if match is None:
        raise ValueError(f"bad size {_shown(text)} ({_SIZE_HINT})")
    number, unit = match.group(1), (match.group(2) or "").upper()
    if not unit and "." in number:
        raise ValueError(
            f"bad size {_shown(text)}: a plain number is a count of bytes and must be whole "
            f"(or add a unit, {_SIZE_HINT})"
        )
    value = math.floor(Fraction(number) * _UNITS[unit])
    if value > UNLIMITED:
        raise ValueError(f"bad size {_shown(text)}: too large")
    return value


def format_size(n: int) -> str:
    """Format bytes in the largest unit that keeps them exact (at most 2 decimals).

    ``536870912`` -> ``512M``, ``1610612736`` -> ``1.5G``, ``1000`` -> ``1000``,
    :data:`UNLIMITED` -> ``max``. ``parse_size(format_size(n)) == n`` for every valid n.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"cannot format {_shown(n)} as a size: expected a whole number >= 0")
    if n == UNLIMITED:
        return "max"
    for unit in ("T", "G", "M", "K"):
        scaled = Fraction(n, _UNITS[unit])
        if scaled >= 1 and (scaled * 100).denominator == 1:
            whole, frac = divmod(scaled, 1)
            if frac == 0:
                return f"{whole}{unit}"
            decimals = f"{float(frac):.2f}"[2:].rstrip("0")
            return f"{whole}.{decimals}{unit}"
    return str(n)


def parse_duration(text: str | int | float) -> float:
    """Parse a duration such as ``30s``, ``500ms``, ``2m``, ``1h``, ``1m30s`` or ``1.5`` (seconds).

    Returns seconds as a float. Raises ValueError naming the bad text and the expected form.
    """
    if isinstance(text, bool):
        raise ValueError(f"bad duration {_shown(text)} ({_DUR_HINT})")
    if isinstance(text, int | float):
        value = float(text)
    elif isinstance(text, str):
        stripped = text.strip()
        negative = stripped.startswith("-")
        body = stripped[1:].strip() if negative else stripped
        is_number = _PLAIN_NUMBER_RE.fullmatch(body) is not None
        if not is_number and _DUR_RE.fullmatch(body) is None:
            raise ValueError(f"bad duration {_shown(text)} ({_DUR_HINT})")
        if negative:
            raise ValueError(f"bad duration {_shown(text)}: negative durations are not allowed")
        if is_number:
            value = float(body)
        else:
            value = sum(
                float(num) * _DUR_UNITS[unit.lower()] for num, unit in _DUR_PART_RE.findall(body)
            )
    else:
        raise ValueError(f"bad duration {_shown(text)} ({_DUR_HINT})")
    if math.isnan(value):
        raise ValueError(f"bad duration {_shown(text)} ({_DUR_HINT})")
    if value < 0:
        raise ValueError(f"bad duration {_shown(text)}: negative durations are not allowed")
    if math.isinf(value):
        raise ValueError(f"bad duration {_shown(text)}: too large")
    return value


def format_duration(seconds: float) -> str:
    """Format seconds in the largest whole unit: ``30.0`` -> ``30s``, ``0.5`` -> ``500ms``."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"cannot format {_shown(seconds)} as a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {_shown(seconds)} as a duration")
    for unit, scale in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= scale and float(seconds / scale).is_integer():
            return f"{int(seconds / scale)}{unit}"
    if seconds >= 1:
        return f"{_positional(seconds)}s"
    millis = seconds * 1000
    if millis.is_integer():
        return f"{int(millis)}ms"
    return f"{_positional(seconds)}s"


def _positional(x: float) -> str:
    """The shortest round-tripping digits of x without an exponent (1e-05 -> 0.00001)."""
    from decimal import Decimal

    return format(Decimal(repr(float(x))), "f")
