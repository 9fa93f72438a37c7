"""Per-container memory policy: model, YAML loader and validator, profiles, intents,
command classification and per-call grants.

The schema, defaults and rules are documented in docs/policy.md. In short::

    priority: low | normal | high                      (default normal)
    memory:
      total: SIZE               container ceiling       (default 4G)
      framework_protect: SIZE   memory.low of framework/ (default 256M)
      tools: SIZE               budget of tools/        (default total - framework_protect)
      tool_default: SIZE        per call                (default 1G, or tools if smaller)
    categories: {NAME: {match: [PATTERN...], memory: SIZE, priority: PRIORITY}}
    on_pressure: [throttle, freeze, kill_tool]          (default: all three, in this order)
    freeze_timeout: DURATION                            (default 30s, > 0)
    admission_timeout: DURATION   longest wait at call start for room (default 30s, >= 0;
                                  0: never wait), then the call runs anyway with a notice

Every problem of a policy is collected (:func:`validate`), never only the first, and no input
makes the loader raise anything but :class:`PolicyInvalid`.
"""

from __future__ import annotations

import base64
import difflib
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import yaml

from agentshim.patterns import PatternError, compile_pattern
from agentshim.units import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "ANNOTATION_ENABLE",
    "ANNOTATION_POLICY",
    "ANNOTATION_PROFILE",
    "BUILTIN_CATEGORIES",
    "BUILTIN_DEFAULT_PROFILE",
    "DEFAULT_PROFILES_DIR",
    "LADDER_STEPS",
    "PRIORITIES",
    "Category",
    "Grant",
    "Intent",
    "MemoryPolicy",
    "Policy",
    "PolicyError",
    "PolicyInvalid",
    "available_profiles",
    "classify",
    "grant",
    "load_policy",
    "load_profile",
    "parse_intent",
    "policy_from_annotations",
    "real_commands",
    "shell_script",
    "validate",
]

PRIORITIES: Final = ("low", "normal", "high")
#: The pressure ladder, in escalation order; a policy lists a subsequence of it.
LADDER_STEPS: Final = ("throttle", "freeze", "kill_tool")
#: Built-in categories in classification rank order (first = most memory-hungry, wins on lines
#: that run several commands); ``other`` is the fallback.
BUILTIN_CATEGORIES: Final = ("test", "build", "install", "python", "git", "file_ops", "other")

DEFAULT_PROFILES_DIR: Final = Path("/etc/agentshim/profiles")
ANNOTATION_POLICY: Final = "io.agentshim.policy"
ANNOTATION_PROFILE: Final = "io.agentshim.profile"
ANNOTATION_ENABLE: Final = "io.agentshim.enable"

_G: Final = 1024**3
_M: Final = 1024**2
DEFAULT_TOTAL: Final = 4 * _G
DEFAULT_FRAMEWORK_PROTECT: Final = 256 * _M
DEFAULT_TOOL_DEFAULT: Final = 1 * _G
DEFAULT_FREEZE_TIMEOUT: Final = 30.0
DEFAULT_ADMISSION_TIMEOUT: Final = 30.0

#: Largest policy text accepted (annotations are far smaller; this only stops abuse).
MAX_POLICY_BYTES: Final = 1024 * 1024
#: Longest command line looked at by :func:`classify`; the rest is ignored.
MAX_COMMAND_CHARS: Final = 256 * 1024
#: User patterns see at most this many characters of each command (bounds regex time).
MAX_PATTERN_TEXT: Final = 1024

_TOP_KEYS: Final = ("priority", "memory", "categories", "on_pressure", "freeze_timeout",
                    "admission_timeout")
_MEMORY_KEYS: Final = ("total", "framework_protect", "tools", "tool_default")
_CATEGORY_KEYS: Final = ("match", "memory", "priority")
_CATEGORY_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PROFILE_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
_REGEX_PREFIX: Final = "re:"

#: The "default" profile used when the profiles directory has no default.yaml; the same
#: content as packaging/profiles/default.yaml (a test keeps them equal).
BUILTIN_DEFAULT_PROFILE: Final = """\
priority: normal
memory:
  total: 4G
  framework_protect: 256M
  tool_default: 1G
categories:
  test:     {memory: 2G}
  build:    {memory: 2G}
  install:  {memory: 1G}
  python:   {memory: 1G}
  git:      {memory: 512M}
  file_ops: {memory: 256M}
on_pressure: [throttle, freeze, kill_tool]
freeze_timeout: 30s
admission_timeout: 30s
"""

_MISSING: Final = object()


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class PolicyError:
    """One problem of a policy: the dotted field it concerns ("" for the whole document)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class PolicyInvalid(ValueError):
    """A policy (or profile, or annotation set) was refused; ``errors`` lists every problem."""

    def __init__(self, errors: Sequence[PolicyError], source: str | None = None) -> None:
        self.errors: list[PolicyError] = list(errors)
        self.source = source
        where = f" ({source})" if source else ""
        lines = "; ".join(str(e) for e in self.errors)
        super().__init__(f"invalid policy{where}: {lines}")


@dataclass(frozen=True)
class MemoryPolicy:
    """Memory budgets in bytes. Build through :func:`load_policy` so the defaults tie up."""

    total: int = DEFAULT_TOTAL
    framework_protect: int = DEFAULT_FRAMEWORK_PROTECT
    tools: int = DEFAULT_TOTAL - DEFAULT_FRAMEWORK_PROTECT
    tool_default: int = DEFAULT_TOOL_DEFAULT


@dataclass(frozen=True)
class Category:
    """A class of tool calls. ``memory``/``priority`` None mean the policy's defaults.

    ``match`` holds the user's patterns (substrings, or regexes written ``re:...``); built-in
    categories are also matched by agentshim's own command rules (``builtin`` True).
    """

    name: str
    match: tuple[str, ...] = ()
    memory: int | None = None
    priority: str | None = None
    builtin: bool = False


def _builtin_categories() -> tuple[Category, ...]:
    return tuple(Category(name, builtin=True) for name in BUILTIN_CATEGORIES)


@dataclass(frozen=True)
class Policy:
    """The effective policy of one container (all defaults filled in)."""

    priority: str = "normal"
    memory: MemoryPolicy = field(default_factory=MemoryPolicy)
    #: User categories in file order, then the built-ins the user did not mention.
    categories: tuple[Category, ...] = field(default_factory=_builtin_categories)
    on_pressure: tuple[str, ...] = LADDER_STEPS
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT
    admission_timeout: float = DEFAULT_ADMISSION_TIMEOUT

    def category(self, name: str) -> Category | None:
        """The category called ``name``, or None."""
        for cat in self.categories:
            if cat.name == name:
                return cat
        return None

    def category_memory(self, name: str) -> int:
        """Per-call memory of a category: its own size, else ``memory.tool_default``."""
        cat = self.category(name)
        if cat is None or cat.memory is None:
            return self.memory.tool_default
        return min(cat.memory, self.memory.tools)

    def _named_builtins(self) -> set[str]:
        """Built-in categories without settings that must still be listed for the order of
        categories (which decides classification) to load back the same: those before the
        longest tail that is the default order of the built-ins not listed before it."""
        names = [c.name for c in self.categories]
        for k in range(len(names) + 1):
            head, tail = names[:k], self.categories[k:]
            if [c.name for c in tail] == [n for n in BUILTIN_CATEGORIES if n not in head] and \
                    all(c.builtin and not c.match and c.memory is None and c.priority is None
                        for c in tail):
                return {c.name for c in self.categories[:k] if c.builtin}
        return set(names)

    def to_dict(self, effective: bool = False) -> dict[str, Any]:
        """The policy as YAML-ready data that :func:`load_policy` accepts back.

        With ``effective`` every category is listed with its memory and priority resolved;
        otherwise only categories carrying settings of their own appear.
        """
        cats: dict[str, Any] = {}
        keep_order = set() if effective else self._named_builtins()
        for cat in self.categories:
            entry: dict[str, Any] = {}
            if cat.match or (effective and not cat.builtin):
                entry["match"] = list(cat.match)
            if effective:
                entry["memory"] = format_size(self.category_memory(cat.name))
                entry["priority"] = cat.priority or self.priority
            else:
                if cat.memory is not None:
                    entry["memory"] = format_size(cat.memory)
                if cat.priority is not None:
                    entry["priority"] = cat.priority
            if entry or not cat.builtin or cat.name in keep_order:
                cats[cat.name] = entry
        return {
            "priority": self.priority,
            "memory": {
                "total": format_size(self.memory.total),
                "framework_protect": format_size(self.memory.framework_protect),
                "tools": format_size(self.memory.tools),
                "tool_default": format_size(self.memory.tool_default),
            },
            "categories": cats,
            "on_pressure": list(self.on_pressure),
            "freeze_timeout": format_duration(self.freeze_timeout),
            "admission_timeout": format_duration(self.admission_timeout),
        }


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that records duplicate mapping keys instead of silently keeping the last."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    self.duplicates.append((key_node.value, key_node.start_mark.line + 1))
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str | bytes) -> tuple[Any, list[PolicyError]]:
    """YAML text -> (data, errors); syntax errors become one error naming line and column."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return None, [PolicyError("", f"not UTF-8 text (byte {exc.start}: {exc.reason})")]
    if len(text) > MAX_POLICY_BYTES:
        return None, [PolicyError("", f"policy too large ({len(text)} characters, at most "
                                      f"{MAX_POLICY_BYTES})")]
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "malformed YAML"
        if exc.context and exc.problem and exc.problem.startswith("but "):
            what = f"{exc.context}, {exc.problem}"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else (
            "YAML syntax error")
        return None, [PolicyError("", f"{kind}{where}: {what}")]
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, [PolicyError("", f"YAML error: {first}")]
    except RecursionError:
        return None, [PolicyError("", "YAML nested too deeply")]
    except Exception as exc:  # the loader must never raise on user input
        return None, [PolicyError("", f"cannot parse YAML: {type(exc).__name__}: {exc}")]
    finally:
        if loader is not None:
            loader.dispose()
    errors = [
        PolicyError("", f"duplicate key {key!r} at line {line} (a key may appear once)")
        for key, line in loader.duplicates
    ]
    return data, errors


# --------------------------------------------------------------------------- validation

_Err = Callable[[str, str], None]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({_shown(value)})"
    if isinstance(value, str):
        return f"a string ({_shown(value)})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_keys(mapping: Mapping[Any, Any], known: Sequence[str], prefix: str, err: _Err) -> None:
    for key in mapping:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        err(_join(prefix, str(key)), f"unknown key {_shown(key)} ({hint}known: {', '.join(known)})")


def _size_at(
    mapping: Mapping[Any, Any], key: str, where: str, err: _Err, default: int | None,
    minimum: int = 1,
) -> int | None:
    """A size field; None when missing without default or when an error was reported."""
    value = mapping.get(key, _MISSING)
    if value is _MISSING:
        return default
    if value is None:
        err(where, "no value given (expected a size such as 512M or 2G; remove the key for "
                   "the default)")
        return None
    if isinstance(value, str) and value.strip().lower() == "max":
        err(where, "'max' is not allowed in a policy (give a size such as 4G)")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        err(where, f"expected a size such as 512M or 2G, got {_kind(value)}")
        return None
    try:
        size = parse_size(str(value) if isinstance(value, float) else value)
    except ValueError as exc:
        err(where, str(exc))
        return None
    if size < minimum:
        err(where, "must be greater than 0")
        return None
    return size


def _priority_at(
    mapping: Mapping[Any, Any], key: str, where: str, err: _Err, default: str | None
) -> str | None:
    value = mapping.get(key, _MISSING)
    if value is _MISSING:
        return default
    if isinstance(value, str) and value.strip().lower() in PRIORITIES:
        return value.strip().lower()
    if isinstance(value, str):
        err(where, f"bad priority {_shown(value)} (expected one of: {', '.join(PRIORITIES)})")
    else:
        err(where, f"expected one of: {', '.join(PRIORITIES)}, got {_kind(value)}")
    return None


def _memory(section: Any, err: _Err) -> tuple[MemoryPolicy | None, int | None]:
    """The memory section -> (MemoryPolicy or None on errors, tools budget if known)."""
    if section is _MISSING or section is None:
        section = {}
    if not isinstance(section, Mapping):
        err("memory", f"expected a mapping with keys {', '.join(_MEMORY_KEYS)}, "
                      f"got {_kind(section)}")
        return None, None
    problems: list[str] = []

    def note(where: str, message: str) -> None:
        problems.append(where)
        err(where, message)

    _check_keys(section, _MEMORY_KEYS, "memory", note)
    total = _size_at(section, "total", "memory.total", note, DEFAULT_TOTAL)
    protect = _size_at(section, "framework_protect", "memory.framework_protect", note,
                       DEFAULT_FRAMEWORK_PROTECT, minimum=0)
    tools = _size_at(section, "tools", "memory.tools", note, None)
    tools_given = "tools" in section
    tool_default = _size_at(section, "tool_default", "memory.tool_default", note, None)

    if total is not None and protect is not None and protect >= total:
        note("memory.framework_protect",
            f"{format_size(protect)} must be smaller than total ({format_size(total)})")
        protect = None
    if tools is None and not tools_given and total is not None and protect is not None:
        tools = total - protect
    elif tools is not None and total is not None and tools > total:
        note("memory.tools", f"{format_size(tools)} is larger than total ({format_size(total)})")
        tools = None
    if tool_default is None and "tool_default" not in section and tools is not None:
        tool_default = min(DEFAULT_TOOL_DEFAULT, tools)
    elif tool_default is not None and tools is not None and tool_default > tools:
        how = "" if tools_given else ", which is total - framework_protect"
        note("memory.tool_default", f"{format_size(tool_default)} is larger than the tools "
                                    f"budget ({format_size(tools)}{how})")
    if problems or None in (total, protect, tools, tool_default):
        return None, tools
    assert total is not None and protect is not None and tools is not None
    assert tool_default is not None
    return MemoryPolicy(total, protect, tools, tool_default), tools


def _regex_problem(body: str) -> str | None:
    """Why a user regex is refused: too long, or outside the linear-time language of
    :mod:`agentshim.patterns` (backreferences, lookaround, ...), or malformed."""
    if len(body) > 500:
        return "longer than 500 characters"
    try:
        compile_pattern(body)
    except PatternError as exc:
        return str(exc)
    return None


def _patterns(value: Any, where: str, err: _Err) -> tuple[str, ...]:
    if value is _MISSING:
        return ()
    if isinstance(value, str):
        items: list[Any] = [value]
        paths = [where]
    elif isinstance(value, list | tuple):
        items = list(value)
        paths = [f"{where}[{i}]" for i in range(len(items))]
    else:
        err(where, f"expected a list of patterns (substrings, or re:REGEX), got {_kind(value)}")
        return ()
    out: list[str] = []
    for item, path in zip(items, paths, strict=True):
        if not isinstance(item, str):
            err(path, f"expected a pattern string, got {_kind(item)}")
            continue
        body = item[len(_REGEX_PREFIX):] if item.startswith(_REGEX_PREFIX) else item
        if not body.strip():
            err(path, "empty pattern (it would match every command)")
            continue
        if item.startswith(_REGEX_PREFIX):
            problem = _regex_problem(body)
            if problem:
                err(path, f"bad regex {_shown(body)}: {problem}")
                continue
        out.append(item)
    return tuple(out)


def _categories(section: Any, tools: int | None, err: _Err) -> tuple[Category, ...] | None:
    if section is _MISSING or section is None:
        return _builtin_categories()
    if not isinstance(section, Mapping):
        err("categories", "expected a mapping of category name to {match, memory, priority}, "
                          f"got {_kind(section)}")
        return None
    user: list[Category] = []
    for name, spec in section.items():
        if not isinstance(name, str) or not _CATEGORY_NAME_RE.fullmatch(name):
            err("categories", f"bad category name {_shown(name)} (1-64 letters, digits, '_', '-')")
            continue
        where = f"categories.{name}"
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            err(where, f"expected a mapping with keys {', '.join(_CATEGORY_KEYS)}, "
                       f"got {_kind(spec)}")
            continue
        _check_keys(spec, _CATEGORY_KEYS, where, err)
        patterns = _patterns(spec.get("match", _MISSING), f"{where}.match", err)
        memory = _size_at(spec, "memory", f"{where}.memory", err, None)
        if memory is not None and tools is not None and memory > tools:
            err(f"{where}.memory",
                f"{format_size(memory)} is larger than the tools budget ({format_size(tools)})")
        priority = _priority_at(spec, "priority", f"{where}.priority", err, None)
        user.append(Category(name, patterns, memory, priority, name in BUILTIN_CATEGORIES))
    named = {c.name for c in user}
    rest = [c for c in _builtin_categories() if c.name not in named]
    return tuple(user + rest)


def _ladder(value: Any, err: _Err) -> tuple[str, ...] | None:
    if value is _MISSING:
        return LADDER_STEPS
    if not isinstance(value, list | tuple):
        err("on_pressure", f"expected a list drawn from {', '.join(LADDER_STEPS)} "
                           f"(e.g. [throttle, freeze, kill_tool]), got {_kind(value)}")
        return None
    steps: list[str] = []
    ok = True
    for i, step in enumerate(value):
        where = f"on_pressure[{i}]"
        if not isinstance(step, str):
            err(where, f"expected a step name, got {_kind(step)}")
            ok = False
        elif step not in LADDER_STEPS:
            close = difflib.get_close_matches(step, LADDER_STEPS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            err(where, f"unknown step {_shown(step)} ({hint}known: {', '.join(LADDER_STEPS)})")
            ok = False
        elif step in steps:
            err(where, f"step {step!r} is listed twice")
            ok = False
        else:
            steps.append(step)
    for before, after in zip(steps, steps[1:], strict=False):
        if LADDER_STEPS.index(after) < LADDER_STEPS.index(before):
            err("on_pressure", f"{after!r} must come before {before!r} (the ladder escalates in "
                               f"the order {', '.join(LADDER_STEPS)})")
            ok = False
            break
    if "kill_tool" in steps and "freeze" not in steps:
        err("on_pressure", "kill_tool needs freeze before it (a tool call is killed only after "
                           "it stayed frozen for freeze_timeout)")
        ok = False
    return tuple(steps) if ok else None


def _timeout(value: Any, err: _Err, key: str = "freeze_timeout",
             default: float = DEFAULT_FREEZE_TIMEOUT, zero_ok: bool = False) -> float | None:
    if value is _MISSING:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        err(key, f"expected a duration such as 30s, got {_kind(value)}")
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        err(key, str(exc))
        return None
    if seconds < 0 or (seconds == 0 and not zero_ok):
        err(key, "must be 0 or more" if zero_ok else "must be greater than 0")
        return None
    return seconds


def _build(data: Any) -> tuple[Policy | None, list[PolicyError]]:
    """Parsed data -> (Policy, []) or (None, every problem found)."""
    errors: list[PolicyError] = []

    def err(where: str, message: str) -> None:
        errors.append(PolicyError(where, message))

    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        err("", f"a policy must be a mapping with keys {', '.join(_TOP_KEYS)}, got {_kind(data)}")
        return None, errors
    _check_keys(data, _TOP_KEYS, "", err)
    priority = _priority_at(data, "priority", "priority", err, "normal")
    memory, tools = _memory(data.get("memory", _MISSING), err)
    categories = _categories(data.get("categories", _MISSING), tools, err)
    ladder = _ladder(data.get("on_pressure", _MISSING), err)
    timeout = _timeout(data.get("freeze_timeout", _MISSING), err)
    admission = _timeout(data.get("admission_timeout", _MISSING), err, "admission_timeout",
                         DEFAULT_ADMISSION_TIMEOUT, zero_ok=True)
    if errors:
        return None, errors
    assert priority is not None and memory is not None and categories is not None
    assert ladder is not None and timeout is not None and admission is not None
    return Policy(priority, memory, categories, ladder, timeout, admission), []


def _load(source: Any) -> tuple[Policy | None, list[PolicyError]]:
    if isinstance(source, Policy):
        return source, []
    if isinstance(source, str | bytes):
        data, errors = _parse_yaml(source)
        if errors:
            return None, errors
    else:
        data = source
    try:
        return _build(data)
    except RecursionError:
        return None, [PolicyError("", "policy nested too deeply")]


def validate(data: Any) -> list[PolicyError]:
    """Every problem of a policy given as YAML text or parsed data; [] when it is valid."""
    return _load(data)[1]


def load_policy(source: str | bytes | Mapping[str, Any] | None) -> Policy:
    """Build the effective Policy from YAML text or parsed data (None or "" = all defaults).

    Raises PolicyInvalid carrying all problems.
    """
    policy, errors = _load(source)
    if errors or policy is None:
        raise PolicyInvalid(errors or [PolicyError("", "invalid policy")])
    return policy


# --------------------------------------------------------------------------- profiles


def available_profiles(profiles_dir: Path = DEFAULT_PROFILES_DIR) -> list[str]:
    """Names of the profiles in ``profiles_dir`` (plus the built-in ``default``), sorted."""
    names = {"default"}
    try:
        for path in Path(profiles_dir).glob("*.yaml"):
            if _PROFILE_NAME_RE.fullmatch(path.stem):
                names.add(path.stem)
    except OSError:
        pass
    return sorted(names)


def load_profile(name: str, profiles_dir: Path = DEFAULT_PROFILES_DIR) -> Policy:
    """Load profile NAME from ``profiles_dir``/NAME.yaml.

    ``default`` falls back to :data:`BUILTIN_DEFAULT_PROFILE` when the directory has none.
    Names are limited to ``[A-Za-z0-9_.-]`` without a leading dot. Raises PolicyInvalid.
    """
    if not isinstance(name, str) or not _PROFILE_NAME_RE.fullmatch(name):
        raise PolicyInvalid([PolicyError(
            "profile", f"bad profile name {_shown(name)} (letters, digits, '_', '.', '-'; "
                       "not starting with '.')")])
    path = Path(profiles_dir) / f"{name}.yaml"
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        if name == "default":
            return load_policy(BUILTIN_DEFAULT_PROFILE)
        listed = ", ".join(available_profiles(profiles_dir))
        raise PolicyInvalid([PolicyError(
            "profile", f"no profile {name!r} in {profiles_dir} (available: {listed})")]) from None
    except OSError as exc:
        raise PolicyInvalid([PolicyError(
            "profile", f"cannot read {path}: {exc.strerror or exc}")]) from None
    policy, errors = _load(text)
    if errors or policy is None:
        raise PolicyInvalid(errors, source=str(path))
    return policy


def annotation_yaml(value: str) -> str:
    """The YAML text of an ``io.agentshim.policy`` annotation.

    `podman run --annotation` cuts values at newlines and splits them at commas, so a
    one-line form is accepted too: ``;`` separates lines (``memory:;  total: 2G``), and
    ``base64:<text>`` carries any YAML. Values with real newlines (podman's API) are YAML as is.
    """
    if value.startswith("base64:"):
        try:
            return base64.b64decode(value[7:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return "!!bad-base64 " + repr(value[:40])
    if "\n" not in value and ";" in value:
        return value.replace(";", "\n")
    return value


def policy_from_annotations(
    annotations: Mapping[str, str], profiles_dir: Path = DEFAULT_PROFILES_DIR
) -> Policy | None:
    """The policy a container's OCI annotations ask for, or None when it is not managed.

    ``io.agentshim.policy`` (inline YAML, ignored when blank) wins, else
    ``io.agentshim.profile=NAME``, else ``io.agentshim.enable=true`` gives the default profile.
    Raises PolicyInvalid (``source`` names the annotation) for a bad policy, profile or flag.
    """
    inline = annotations.get(ANNOTATION_POLICY)
    if isinstance(inline, str) and inline.strip():
        policy, errors = _load(annotation_yaml(inline))
        if errors or policy is None:
            raise PolicyInvalid(errors, source=f"annotation {ANNOTATION_POLICY}")
        return policy
    profile = annotations.get(ANNOTATION_PROFILE)
    if profile is not None:
        try:
            return load_profile(str(profile).strip(), profiles_dir)
        except PolicyInvalid as exc:
            raise PolicyInvalid(exc.errors, source=exc.source
                                or f"annotation {ANNOTATION_PROFILE}") from None
    enable = annotations.get(ANNOTATION_ENABLE)
    if enable is None:
        return None
    flag = str(enable).strip().lower()
    if flag in ("true", "1", "yes", "on"):
        return load_profile("default", profiles_dir)
    if flag in ("false", "0", "no", "off", ""):
        return None
    raise PolicyInvalid([PolicyError(
        ANNOTATION_ENABLE, f"bad value {_shown(enable)} (expected true or false)")])


# --------------------------------------------------------------------------- intent


@dataclass(frozen=True)
class Intent:
    """What the agent says a call needs (AGENTSHIM_INTENT). None = not said.

    ``memory`` is in bytes; ``memory=max`` gives :data:`agentshim.units.UNLIMITED` (the whole
    tools budget once granted).
    """

    memory: int | None = None
    priority: str | None = None
    category: str | None = None


_INTENT_KEYS: Final = ("memory", "priority", "category")
MAX_INTENT_CHARS: Final = 4096


def parse_intent(text: str | None) -> tuple[Intent, list[str]]:
    """Parse ``key=value`` pairs separated by commas, e.g. ``memory=2G,priority=low``.

    Never raises: bad or unknown parts are dropped and described in the warnings list.
    """
    warnings: list[str] = []
    if text is None:
        return Intent(), warnings
    if not isinstance(text, str):
        return Intent(), [f"intent ignored: expected text, got {_kind(text)}"]
    if len(text) > MAX_INTENT_CHARS:
        warnings.append(f"intent longer than {MAX_INTENT_CHARS} characters; the rest ignored")
        text = text[:MAX_INTENT_CHARS]
    values: dict[str, Any] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        shown = _shown(part)
        if not eq:
            warnings.append(f"intent: ignored {shown}: expected key=value "
                            f"(keys: {', '.join(_INTENT_KEYS)})")
            continue
        if key not in _INTENT_KEYS:
            warnings.append(f"intent: ignored {shown}: unknown key "
                            f"(known: {', '.join(_INTENT_KEYS)})")
            continue
        if key == "memory":
            try:
                parsed: Any = parse_size(value)
            except ValueError as exc:
                warnings.append(f"intent: ignored {shown}: {exc}")
                continue
            if parsed == 0:
                warnings.append(f"intent: ignored {shown}: memory must be greater than 0")
                continue
        elif key == "priority":
            parsed = value.lower()
            if parsed not in PRIORITIES:
                warnings.append(f"intent: ignored {shown}: expected one of "
                                f"{', '.join(PRIORITIES)}")
                continue
        else:
            parsed = value
            if not _CATEGORY_NAME_RE.fullmatch(parsed):
                warnings.append(f"intent: ignored {shown}: bad category name")
                continue
        if key in values:
            warnings.append(f"intent: {key} given twice; the last value ({value}) is used")
        values[key] = parsed
    return Intent(**values), warnings


# --------------------------------------------------------------------------- command lines

_SEPARATORS: Final = frozenset({"&&", "||", ";", ";;", ";&", "|", "|&", "&", "\n", "(", ")"})
_REDIRECTS: Final = frozenset(
    {"<", ">", ">>", ">|", "<>", "<&", ">&", "&>", "&>>", "<<<", "<<", "<<-"})
_OPERATORS: Final = sorted(_SEPARATORS | _REDIRECTS, key=len, reverse=True)
_OPERATOR_CHARS: Final = frozenset("&|;<>()\n")
_BLANKS: Final = frozenset(" \t\r\f\v")
_WORD_RUN: Final = re.compile(r"[^ \t\r\n\f\v'\"\\$`&|;<>()]+")
_DQ_SPECIAL: Final = re.compile(r'["\\]')
_MAX_DEPTH: Final = 6


def _matching(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the ``close`` matching ``text[i] == open_`` (len(text) when unclosed)."""
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "'":
            j = text.find("'", i + 1)
            i = n if j < 0 else j + 1
            continue
        if c == "\\":
            i += 2
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _tokenize(text: str) -> list[tuple[str, str]]:
    """Shell-like tokens ("w" word, "sep", "redir", "heredoc" body). Never raises.

    Quotes are removed as a shell would; unclosed quotes run to the end of the text;
    ``$(...)``, ``${...}`` and backquotes stay inside their word.
    """
    tokens: list[tuple[str, str]] = []
    word: list[str] | None = None
    pending: list[tuple[str, bool]] = []  # here-doc delimiters waiting for the next newline
    delimiter_next: bool | None = None  # after << / <<-: the next word is a delimiter
    i, n = 0, len(text)

    def end_word() -> None:
        nonlocal word, delimiter_next
        if word is not None:
            value = "".join(word)
            tokens.append(("w", value))
            if delimiter_next is not None:
                pending.append((value, delimiter_next))
                delimiter_next = None
            word = None

    while i < n:
        c = text[i]
        if c in _BLANKS:
            end_word()
            i += 1
        elif c == "#" and word is None:
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c == "\\":
            if i + 1 < n and text[i + 1] == "\n":
                i += 2
                continue
            word = word if word is not None else []
            word.append(text[i + 1: i + 2])
            i += 2
        elif c == "'":
            word = word if word is not None else []
            j = text.find("'", i + 1)
            j = n if j < 0 else j
            word.append(text[i + 1: j])
            i = j + 1
        elif c == '"':
            word = word if word is not None else []
            i += 1
            while i < n:
                m = _DQ_SPECIAL.search(text, i)
                if m is None:
                    word.append(text[i:])
                    i = n
                    break
                word.append(text[i: m.start()])
                i = m.start()
                if text[i] == '"':
                    i += 1
                    break
                nxt = text[i + 1: i + 2]
                if nxt in ('"', "\\", "$", "`"):
                    word.append(nxt)
                elif nxt != "\n":
                    word.append("\\" + nxt)
                i += 2
        elif c == "$" and text[i + 1: i + 2] in ("(", "{"):
            word = word if word is not None else []
            open_ = text[i + 1]
            j = _matching(text, i + 1, open_, ")" if open_ == "(" else "}")
            word.append(text[i:j])
            i = j
        elif c == "`":
            word = word if word is not None else []
            j = text.find("`", i + 1)
            j = n if j < 0 else j + 1
            word.append(text[i:j])
            i = j
        elif c in _OPERATOR_CHARS:
            if c in "<>" and word and "".join(word).isdigit():
                word = None  # a file descriptor number: 2>&1
            end_word()
            op = next(o for o in _OPERATORS if text.startswith(o, i))
            i += len(op)
            if op == "\n":
                tokens.append(("sep", op))
                for delim, strip_tabs in pending:
                    body: list[str] = []
                    while i < n:
                        j = text.find("\n", i)
                        j = n if j < 0 else j
                        line = text[i:j]
                        i = j + 1
                        if (line.lstrip("\t") if strip_tabs else line) == delim:
                            break
                        body.append(line)
                    tokens.append(("heredoc", "\n".join(body)))
                pending.clear()
            elif op in _SEPARATORS:
                tokens.append(("sep", op))
            else:
                tokens.append(("redir", op))
                if op in ("<<", "<<-"):
                    delimiter_next = op == "<<-"
        else:
            word = word if word is not None else []
            m = _WORD_RUN.match(text, i)
            j = m.end() if m else i + 1
            word.append(text[i:j])
            i = j
    end_word()
    return tokens


@dataclass
class _Simple:
    words: list[str]
    heredoc: str | None = None


def _simple_commands(text: str) -> list[_Simple]:
    """Split tokens into simple commands; redirection targets are dropped."""
    commands: list[_Simple] = []
    current = _Simple([])
    skip_word = False
    waiting: list[_Simple] = []
    for kind, value in _tokenize(text):
        if kind == "w":
            if skip_word:
                skip_word = False
            else:
                current.words.append(value)
        elif kind == "redir":
            skip_word = True
            if value in ("<<", "<<-"):
                waiting.append(current)
        elif kind == "sep":
            skip_word = False
            if current.words:
                commands.append(current)
            current = _Simple([])
        elif waiting:  # heredoc body
            waiting.pop(0).heredoc = value
    if current.words:
        commands.append(current)
    return commands


_ASSIGNMENT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_KEYWORDS: Final = frozenset({"!", "{", "}", "if", "then", "else", "elif", "do", "while", "until"})
# wrapper -> (options taking a value, positional arguments before the command)
_WRAPPERS: Final[dict[str, tuple[frozenset[str], int]]] = {
    "sudo": (frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "--user",
                        "--group", "--chdir", "--prompt", "--role", "--type", "--other-user",
                        "--host", "--close-from", "--command-timeout"}), 0),
    "doas": (frozenset({"-u", "-C"}), 0),
    "env": (frozenset({"-u", "--unset", "-C", "--chdir"}), 0),
    "timeout": (frozenset({"-s", "--signal", "-k", "--kill-after"}), 1),
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "ionice": (frozenset({"-c", "--class", "-n", "--classdata"}), 0),
    "nohup": (frozenset(), 0),
    "setsid": (frozenset(), 0),
    "time": (frozenset({"-f", "--format", "-o", "--output"}), 0),
    "command": (frozenset(), 0),
    "builtin": (frozenset(), 0),
    "exec": (frozenset({"-a"}), 0),
    "stdbuf": (frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}), 0),
    "unbuffer": (frozenset(), 0),
    "chronic": (frozenset(), 0),
    "taskset": (frozenset(), 1),
    "chrt": (frozenset(), 1),
    "watch": (frozenset({"-n", "--interval"}), 0),
    "xargs": (frozenset({"-a", "--arg-file", "-d", "--delimiter", "-E", "-I", "-L", "-n",
                         "--max-args", "-P", "--max-procs", "-s", "--max-chars"}), 0),
    "npx": (frozenset({"-p", "--package"}), 0),
    "pnpx": (frozenset({"-p", "--package"}), 0),
    "bunx": (frozenset({"-p", "--package"}), 0),
    "uvx": (frozenset({"--from", "--with", "--python", "-p", "--index", "--index-url"}), 0),
}
_RUN_OPTS: Final = frozenset({"--with", "--with-editable", "--with-requirements", "--python", "-p",
                              "--extra", "--group", "--only-group", "--package", "--directory",
                              "--project", "--env-file", "--index", "--index-url", "-n",
                              "--name", "--prefix", "--cwd", "-e", "--env"})
# (tool, subcommand) pairs that run the command after them
_RUNNERS: Final = frozenset({("uv", "run"), ("poetry", "run"), ("pipenv", "run"), ("pdm", "run"),
                             ("hatch", "run"), ("rye", "run"), ("conda", "run"), ("mamba", "run"),
                             ("micromamba", "run"), ("pipx", "run"), ("npm", "exec"),
                             ("pnpm", "exec"), ("pnpm", "dlx"), ("yarn", "dlx"), ("yarn", "exec")})
_SHELLS: Final = frozenset({"bash", "sh", "zsh", "dash", "ksh", "mksh", "ash"})


def _base(word: str) -> str:
    return word.rstrip("/").rsplit("/", 1)[-1]


def _skip_options(words: list[str], i: int, with_value: frozenset[str], positional: int) -> int:
    while i < len(words):
        arg = words[i]
        if arg == "--":
            i += 1
            break
        if arg.startswith("-") and len(arg) > 1:
            i += 2 if arg in with_value else 1
            continue
        break
    return min(i + positional, len(words))


def shell_script(words: Sequence[str], heredoc: str | None = None) -> str | None:
    """The script a shell invocation (argv) runs: its -c argument, or a here-doc fed to it.

    Options follow bash: ``c`` in any cluster (``-c``, ``-lc``, ``+c``) makes it a command
    string, each ``o``/``O`` in a cluster takes the next word, ``--`` ends the options.
    """
    i, seen_c = 1, False
    while i < len(words):
        arg = words[i]
        if arg == "--":
            i += 1
            break
        if arg in ("--rcfile", "--init-file"):
            i += 2
            continue
        if arg.startswith("--"):
            i += 1
            continue
        if arg[:1] in ("-", "+") and len(arg) > 1:
            flags = arg[1:]
            seen_c = seen_c or "c" in flags
            i += 1 + flags.count("o") + flags.count("O")
            continue
        break
    if seen_c:
        return words[i] if i < len(words) else None
    if i >= len(words) and heredoc is not None:
        return heredoc
    return None


def _unwrap(cmd: _Simple, depth: int) -> list[list[str]]:
    """Strip assignments, keywords and wrappers; look inside bash -c, eval, here-docs."""
    words = cmd.words
    i = 0
    while i < len(words):
        word = words[i]
        base = _base(word)
        if _ASSIGNMENT_RE.match(word) or word in _KEYWORDS:
            i += 1
        elif base == "command" and words[i + 1: i + 2] in (["-v"], ["-V"]):
            break
        elif base in _WRAPPERS:
            with_value, positional = _WRAPPERS[base]
            i = _skip_options(words, i + 1, with_value, positional)
        elif (base, words[i + 1] if i + 1 < len(words) else "") in _RUNNERS:
            i = _skip_options(words, i + 2, _RUN_OPTS, 0)
        else:
            break
    rest = words[i:]
    if not rest:
        return []
    base = _base(rest[0])
    if depth < _MAX_DEPTH:
        if base in _SHELLS:
            script = shell_script(rest, cmd.heredoc)
            if script is not None:
                return _commands(script, depth + 1)
        elif base == "eval":
            return _commands(" ".join(rest[1:]), depth + 1)
    return [rest]


def _commands(text: str, depth: int) -> list[list[str]]:
    out: list[list[str]] = []
    for cmd in _simple_commands(text):
        out.extend(_unwrap(cmd, depth))
    return out


def real_commands(command_line: str | Sequence[str]) -> list[list[str]]:
    """The commands a tool call really runs, as word lists, wrappers removed.

    ``bash -c``/``-lc`` scripts, ``eval`` strings, here-docs fed to a shell, ``cd x &&``,
    ``FOO=1``, ``timeout 60``, ``sudo``, ``env``, ``uv run``, ``npx`` ... are looked through.
    A sequence is taken as an argv. Never raises.
    """
    if not isinstance(command_line, str):
        command_line = shlex.join(str(a) for a in command_line)
    return _commands(command_line[:MAX_COMMAND_CHARS], 0)


# --------------------------------------------------------------------------- classification

_TEST_RUNNERS: Final = frozenset({"pytest", "py.test", "pytest-3", "tox", "nox", "nose2",
                                  "nosetests", "jest", "vitest", "mocha", "ava", "karma",
                                  "phpunit", "rspec", "ctest", "ward", "trial"})
_BUILD_TOOLS: Final = frozenset({"cmake", "ninja", "meson", "gcc", "g++", "cc", "c++", "clang",
                                 "clang++", "ld", "rustc", "javac", "kotlinc", "scalac", "swiftc",
                                 "ghc", "tsc", "webpack", "esbuild", "rollup", "vite", "configure",
                                 "autoreconf", "autoconf", "automake", "scons", "mypy", "pyright",
                                 "cython", "nvcc", "maturin"})
_FILE_OPS: Final = frozenset({"ls", "cat", "grep", "egrep", "fgrep", "rg", "ag", "find", "fd",
                              "sed", "awk", "head", "tail", "wc", "cp", "mv", "rm", "mkdir",
                              "rmdir", "touch", "chmod", "chown", "ln", "tree", "stat", "du",
                              "df", "diff", "file", "less", "more", "tee", "cut", "tr", "sort",
                              "uniq", "realpath", "readlink", "basename", "dirname", "tar",
                              "zip", "unzip", "gzip", "gunzip", "jq", "nl", "xxd", "od",
                              "apply_patch", "patch", "install", "rsync", "truncate"})
_PYTHON_RE: Final = re.compile(r"(python|pypy)(\d+(\.\d+)*)?(-dbg)?|ipython\d*")
_PIP_RE: Final = re.compile(r"pip\d*(\.\d+)?")
_PKG_INSTALL: Final[dict[str, frozenset[str]]] = {
    "apt-get": frozenset({"install", "update", "upgrade", "dist-upgrade", "full-upgrade",
                          "build-dep", "reinstall", "source"}),
    "apt": frozenset({"install", "update", "upgrade", "full-upgrade", "reinstall"}),
    "aptitude": frozenset({"install", "update", "upgrade", "safe-upgrade", "full-upgrade"}),
    "apk": frozenset({"add", "update", "upgrade", "fix"}),
    "dnf": frozenset({"install", "in", "update", "upgrade", "reinstall", "builddep"}),
    "yum": frozenset({"install", "update", "upgrade", "reinstall"}),
    "microdnf": frozenset({"install", "update", "upgrade"}),
    "zypper": frozenset({"install", "in", "update", "up", "dist-upgrade", "dup"}),
    "brew": frozenset({"install", "upgrade", "update", "reinstall"}),
    "gem": frozenset({"install", "update"}),
    "bundle": frozenset({"install", "update"}),
    "composer": frozenset({"install", "require", "update"}),
    "pipx": frozenset({"install", "upgrade", "reinstall"}),
    "poetry": frozenset({"install", "add", "update", "lock", "sync"}),
    "pipenv": frozenset({"install", "sync", "update", "lock"}),
    "pdm": frozenset({"install", "add", "sync", "update", "lock"}),
    "conda": frozenset({"install", "create", "update", "env"}),
    "mamba": frozenset({"install", "create", "update", "env"}),
    "micromamba": frozenset({"install", "create", "update", "env"}),
    "rustup": frozenset({"install", "update", "toolchain", "target", "component"}),
}
_TEST_TARGET_RE: Final = re.compile(
    r"(test|tests|check|unittest|unittests|pytest|integration|e2e)([-_:./][\w.:/-]*)?"
    r"|[\w.-]*[-_.](test|tests|check)", re.IGNORECASE)
_JS_OPTS: Final = frozenset({"--prefix", "-C", "--dir", "-w", "--workspace", "--filter", "-F",
                             "--cwd"})
_JS_INSTALL: Final = frozenset({"install", "i", "in", "ci", "add", "isntall", "update", "up",
                                "upgrade", "remove", "rm", "uninstall", "un", "dedupe"})
_RANK: Final = {name: i for i, name in enumerate(BUILTIN_CATEGORIES)}


def _positionals(args: list[str], with_value: frozenset[str] = frozenset()) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith(("-", "+")) and len(arg) > 1:
            i += 2 if arg in with_value else 1
            continue
        out.append(arg)
        i += 1
    return out


def _script_category(name: str) -> str:
    if _TEST_TARGET_RE.fullmatch(name) or name in _TEST_RUNNERS:
        return "test"
    if re.fullmatch(r"(build|compile|bundle|tsc|webpack|dist|package)([-_:.][\w.:-]*)?", name):
        return "build"
    if name in ("install", "bootstrap", "setup"):
        return "install"
    return "other"


def _js_category(head: str, args: list[str]) -> str:
    pos = _positionals(args, _JS_OPTS)
    if not pos:
        return "install" if head == "yarn" else "other"
    sub = pos[0]
    if sub in ("test", "t", "tst", "it", "install-test", "cit", "install-ci-test"):
        return "test"
    if head == "deno":
        return {"compile": "build", "bundle": "build", "install": "install", "add": "install",
                "cache": "install"}.get(sub, "other")
    if head == "bun" and sub == "build":
        return "build"
    if sub in _JS_INSTALL:
        return "install"
    if sub in ("run", "run-script", "rum", "urn"):
        return _script_category(pos[1]) if len(pos) > 1 else "other"
    if head in ("yarn", "pnpm", "bun"):
        return _script_category(sub)
    return "other"


def _python_category(args: list[str]) -> str:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-":
            return "python"
        if arg.startswith("--"):
            i += 2 if arg == "--check-hash-based-pycs" else 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            for k, flag in enumerate(arg[1:], start=1):
                if flag == "c":
                    return "python"
                if flag == "m":
                    module = arg[k + 1:] or (args[i + 1] if i + 1 < len(args) else "")
                    rest = args[i + 1:] if arg[k + 1:] else args[i + 2:]
                    return _python_module_category(module, rest)
                if flag in ("W", "X"):
                    if not arg[k + 1:]:
                        i += 1
                    break
            i += 1
            continue
        return _python_script_category(arg, args[i + 1:])
    return "python"


def _python_module_category(module: str, args: list[str]) -> str:
    if module in ("pytest", "py.test", "unittest", "tox", "nox", "nose2", "nose", "ward"):
        return "test"
    if module == "pip":
        pos = _positionals(args)
        return "install" if pos and pos[0] in ("install", "download", "uninstall") else "other"
    if module == "ensurepip":
        return "install"
    if module in ("build", "mypy", "pyright", "compileall", "nuitka", "PyInstaller"):
        return "build"
    return "python"


def _python_script_category(script: str, args: list[str]) -> str:
    name = _base(script)
    pos = _positionals(args)
    sub = pos[0] if pos else ""
    if name == "manage.py" and sub == "test":
        return "test"
    if name == "setup.py":
        if sub == "test":
            return "test"
        if sub.startswith(("build", "bdist", "sdist")):
            return "build"
        if sub in ("install", "develop"):
            return "install"
    if re.fullmatch(r"test_.*\.py|.*_tests?\.py|tests?\.py|runtests\.py|conftest\.py", name):
        return "test"
    return "python"


def _make_category(args: list[str]) -> str:
    targets: list[str] = []
    i = 0
    valued = {"-C", "-f", "-I", "-o", "-W", "--file", "--makefile", "--directory",
              "--include-dir", "--old-file", "--assume-old", "--new-file", "--assume-new",
              "--what-if"}
    while i < len(args):
        arg = args[i]
        numeric = args[i + 1].replace(".", "", 1).isdigit() if i + 1 < len(args) else False
        if arg in valued or (arg in ("-j", "-l", "--jobs", "--load-average") and numeric):
            i += 2
        elif arg.startswith("-") or "=" in arg:
            i += 1
        else:
            targets.append(arg)
            i += 1
    return "test" if any(_TEST_TARGET_RE.fullmatch(t) for t in targets) else "build"


def _builtin_category(words: list[str]) -> str:
    """Category of one real command by agentshim's built-in rules."""
    head, args = _base(words[0]), words[1:]
    if head in _TEST_RUNNERS:
        return "test"
    if _PYTHON_RE.fullmatch(head):
        return _python_category(args)
    pos = _positionals(args)
    sub = pos[0] if pos else ""
    if _PIP_RE.fullmatch(head):
        return "install" if sub in ("install", "download", "uninstall") else "other"
    if head == "uv":
        if sub == "pip":
            return "install" if pos[1:2] in (["install"], ["sync"], ["uninstall"]) else "other"
        if sub in ("add", "sync", "lock", "remove") or pos[:2] == ["tool", "install"]:
            return "install"
        return "build" if sub == "build" else "other"
    if head in ("npm", "yarn", "pnpm", "bun", "deno"):
        return _js_category(head, args)
    if head == "go":
        if sub == "test":
            return "test"
        if sub in ("build", "install", "run", "vet", "generate"):
            return "build"
        return "install" if sub in ("get", "mod") else "other"
    if head == "cargo":
        sub = next((p for p in pos if not p.startswith("+")), "")
        if sub in ("test", "t", "nextest", "bench"):
            return "test"
        if sub in ("build", "b", "check", "c", "clippy", "run", "r", "doc", "rustc", "fix"):
            return "build"
        return "install" if sub in ("install", "fetch", "add", "update") else "other"
    if head in ("make", "gmake", "bmake"):
        return _make_category(args)
    if head in ("mvn", "mvnw", "gradle", "gradlew", "bazel", "bazelisk", "dotnet", "sbt"):
        if any(_TEST_TARGET_RE.fullmatch(p) or p == "verify" for p in pos):
            return "test"
        return "install" if head == "dotnet" and sub == "restore" else "build"
    if head in ("docker", "podman") and sub in ("build", "buildx") or head == "buildah":
        return "build"
    if head == "playwright" and sub == "test" or head == "cypress" and sub == "run":
        return "test"
    if head in _BUILD_TOOLS:
        return "build"
    if head in _PKG_INSTALL:
        if head == "poetry" and sub == "build":
            return "build"
        if head == "bundle" and not sub:
            return "install"
        return "install" if sub in _PKG_INSTALL[head] else "other"
    if head == "dpkg" and any(a in ("-i", "--install") for a in args):
        return "install"
    if head == "git":
        return "git"
    if head in _FILE_OPS:
        return "file_ops"
    return "other"


def _pattern_matches(pattern: str, text: str) -> bool:
    if pattern.startswith(_REGEX_PREFIX):
        try:
            rx = compile_pattern(pattern[len(_REGEX_PREFIX):])
        except PatternError:
            return False
        return rx.search(text)
    return pattern in text


def classify(command_line: str | Sequence[str], policy: Policy | None = None) -> str:
    """Category of a tool call's command line (a string, or an argv sequence).

    The policy's ``match`` patterns are tried first, category by category in policy order,
    against each real command (see :func:`real_commands`) joined with single spaces; then the
    built-in rules. When a line runs several commands the highest ranked category wins
    (order of :data:`BUILTIN_CATEGORIES`). Never raises; unknown commands are ``other``.
    """
    commands = real_commands(command_line)
    texts = [" ".join(words)[:MAX_PATTERN_TEXT] for words in commands]
    if policy is not None:
        for cat in policy.categories:
            for pattern in cat.match:
                if any(_pattern_matches(pattern, t) for t in texts):
                    return cat.name
    best = "other"
    for words in commands:
        found = _builtin_category(words)
        if _RANK[found] < _RANK[best]:
            best = found
    return best


# --------------------------------------------------------------------------- grants


class Grant(NamedTuple):
    """What one tool call gets: memory.high in bytes, its priority, and why (notes)."""

    memory: int
    priority: str
    notes: list[str]


def grant(policy: Policy, category: str, intent: Intent | None = None) -> Grant:
    """Memory and priority of a call of ``category`` given the agent's intent.

    Intent memory is honoured up to the tools budget (reduced with a note); otherwise the
    category's memory, else ``memory.tool_default``. An intent may lower the priority, not
    raise it above what the policy gives. A known intent category replaces ``category``.
    """
    notes: list[str] = []
    intent = intent or Intent()
    name = category
    if intent.category and intent.category != category:
        if policy.category(intent.category) is not None:
            notes.append(f"category {intent.category} from intent (command looked like "
                         f"{category})")
            name = intent.category
        else:
            notes.append(f"intent category {intent.category!r} is not in the policy; "
                         f"kept {category}")
    cat = policy.category(name)
    if cat is None:
        notes.append(f"unknown category {name!r}; treated as other")
        cat = policy.category("other") or Category("other", builtin=True)
    tools = policy.memory.tools
    if intent.memory is not None:
        memory = min(intent.memory, tools)
        if intent.memory > tools:
            notes.append(f"intent memory {format_size(intent.memory)} reduced to "
                         f"{format_size(tools)} (the tools budget)")
    else:
        memory = policy.category_memory(cat.name)
    priority = cat.priority or policy.priority
    if intent.priority is not None:
        if PRIORITIES.index(intent.priority) > PRIORITIES.index(priority):
            notes.append(f"intent priority {intent.priority} is above the policy's {priority}; "
                         f"kept {priority}")
        else:
            priority = intent.priority
    return Grant(memory, priority, notes)
