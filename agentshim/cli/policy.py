"""`agentshim policy`: validate, show and try out per-container memory policies.

Exit status: 0 fine, 1 the policy is invalid, 2 it could not be read (or bad usage).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import click
import yaml

from agentshim.policy import (
    DEFAULT_PROFILES_DIR,
    Policy,
    PolicyError,
    PolicyInvalid,
    classify,
    grant,
    load_policy,
    load_profile,
    parse_intent,
    real_commands,
    validate,
)
from agentshim.units import format_duration, format_size

_PROFILES_DIR_OPTION = click.option(
    "--profiles-dir", type=click.Path(path_type=Path), default=DEFAULT_PROFILES_DIR,
    show_default=True, help="Where profiles (NAME.yaml) live.")
_JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _read(file: str, command: str) -> bytes:
    """The bytes of FILE ('-' = stdin); exit 2 with one clear line when it cannot be read."""
    try:
        if file == "-":
            return click.get_binary_stream("stdin").read()
        return Path(file).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        click.echo(f"agentshim policy {command}: cannot read {file}: {reason}", err=True)
        raise SystemExit(2) from None


def _problem_lines(label: str, errors: list[PolicyError]) -> list[str]:
    return [f"{label}: {error}" for error in errors]


def summary(policy: Policy) -> list[str]:
    """A few indented lines describing the effective policy."""
    mem = policy.memory
    cats = []
    for cat in policy.categories:
        text = f"{cat.name} {format_size(policy.category_memory(cat.name))}"
        if cat.priority and cat.priority != policy.priority:
            text += f" ({cat.priority})"
        if cat.match:
            text += " [" + ", ".join(cat.match) + "]"
        cats.append(text)
    ladder = " -> ".join(policy.on_pressure) or "none (calls are only accounted)"
    return [
        f"  priority: {policy.priority}",
        f"  memory: total {format_size(mem.total)}, framework_protect "
        f"{format_size(mem.framework_protect)}, tools {format_size(mem.tools)}, "
        f"tool_default {format_size(mem.tool_default)}",
        f"  categories: {', '.join(cats)}",
        f"  on_pressure: {ladder}; freeze_timeout {format_duration(policy.freeze_timeout)}",
    ]


def _errors_json(errors: list[PolicyError]) -> list[dict[str, str]]:
    return [{"field": e.field, "message": e.message} for e in errors]


def _resolve(
    file: str | None, profile: str | None, profiles_dir: Path, command: str, as_json: bool,
    file_option: str = "FILE",
) -> Policy:
    """The policy from FILE, or profile NAME, or the default profile; exits on problems."""
    if file is not None and profile is not None:
        raise click.UsageError(f"give {file_option} or --profile, not both")
    label = file if file is not None else f"profile {profile or 'default'}"
    if file is not None:
        data = _read(file, command)
        errors = validate(data)
        policy = None if errors else load_policy(data)
    else:
        try:
            policy, errors = load_profile(profile or "default", profiles_dir), []
        except PolicyInvalid as exc:
            policy, errors = None, exc.errors
            if exc.source:
                label = exc.source
            elif all(e.field == "profile" for e in errors):  # bad name, missing or unreadable
                for error in errors:
                    click.echo(f"agentshim policy {command}: {error.message}", err=True)
                raise SystemExit(2) from None
    if policy is None:
        if as_json:
            click.echo(json.dumps({"source": label, "valid": False,
                                   "errors": _errors_json(errors)}, indent=2))
        else:
            for line in _problem_lines(label, errors):
                click.echo(line)
        raise SystemExit(1)
    return policy


@click.group("policy")
def policy() -> None:
    """Validate, show and try out per-container memory policies (docs/policy.md)."""


@policy.command("validate")
@click.argument("file")
@_JSON_OPTION
def validate_cmd(file: str, as_json: bool) -> None:
    """Check the policy in FILE ('-' for stdin); list every problem, one per line.

    Exit status 0 valid, 1 invalid, 2 unreadable.
    """
    data = _read(file, "validate")
    errors = validate(data)
    policy_ = None if errors else load_policy(data)
    if as_json:
        click.echo(json.dumps({
            "file": file,
            "valid": not errors,
            "errors": _errors_json(errors),
            "policy": policy_.to_dict(effective=True) if policy_ else None,
        }, indent=2))
    elif policy_ is not None:
        click.echo(f"{file}: valid")
        for line in summary(policy_):
            click.echo(line)
    else:
        for line in _problem_lines(file, errors):
            click.echo(line)
    if errors:
        raise SystemExit(1)


@policy.command("show")
@click.argument("file", required=False)
@click.option("--profile", metavar="NAME", help="Show profile NAME instead of a file.")
@_PROFILES_DIR_OPTION
@_JSON_OPTION
def show_cmd(file: str | None, profile: str | None, profiles_dir: Path, as_json: bool) -> None:
    """Print the effective policy of FILE or --profile NAME (default: the default profile).

    Every default is filled in; the output is itself a valid policy.
    """
    policy_ = _resolve(file, profile, profiles_dir, "show", as_json)
    data = policy_.to_dict(effective=True)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    source = file if file is not None else f"profile {profile or 'default'}"
    click.echo(f"# effective policy of {source}; categories without match use the built-in")
    click.echo("# command rules (docs/policy.md)")
    click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=None).rstrip())


@policy.command("classify")
@click.argument("command_line", nargs=-1, required=True)
@click.option("--policy", "policy_file", metavar="FILE", help="Policy file to classify with.")
@click.option("--profile", metavar="NAME", help="Profile to classify with (default: default).")
@click.option("--intent", metavar="INTENT", help="An AGENTSHIM_INTENT value, e.g. memory=2G.")
@_PROFILES_DIR_OPTION
@_JSON_OPTION
def classify_cmd(
    command_line: tuple[str, ...], policy_file: str | None, profile: str | None,
    intent: str | None, profiles_dir: Path, as_json: bool,
) -> None:
    """Print the category and the grant of a tool call's COMMAND_LINE.

    Several arguments are joined with spaces: `classify 'cd x && pytest'` and
    `classify -- timeout 60 pytest -q` both work.
    """
    policy_ = _resolve(policy_file, profile, profiles_dir, "classify", as_json,
                       file_option="--policy")
    line = " ".join(command_line)
    category = classify(line, policy_)
    parsed, warnings = parse_intent(intent)
    memory, priority, notes = grant(policy_, category, parsed)
    if parsed.category and policy_.category(parsed.category) is not None:
        category = parsed.category
    commands = [shlex.join(words) for words in real_commands(line)]
    if as_json:
        out: dict[str, Any] = {
            "category": category, "memory": format_size(memory), "memory_bytes": memory,
            "priority": priority, "commands": commands, "notes": notes, "warnings": warnings,
        }
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"category: {category}")
    click.echo(f"grant: memory {format_size(memory)}, priority {priority}")
    for text in commands:
        click.echo(f"command: {text}")
    for text in notes:
        click.echo(f"note: {text}")
    for text in warnings:
        click.echo(f"warning: {text}")
