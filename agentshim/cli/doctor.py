"""`agentshim doctor`: what this host can do for agentshim, and what to fix."""

from __future__ import annotations

import json

import click

from agentshim.doctor import MISSING, OK, WARN, Check, run_doctor

_TAGS = {OK: "[ ok ]", WARN: "[warn]", MISSING: "[MISS]"}


def format_check(check: Check) -> str:
    """One text line for a check: '[tag] name: detail  -> fix: ...'."""
    line = f"{_TAGS.get(check.status, '[ ?? ]')} {check.name}: {check.detail}"
    if check.status != OK and check.fix:
        line += f"  -> fix: {check.fix}"
    return line


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
def doctor(as_json: bool) -> None:
    """Check cgroups, PSI, BPF, podman and agentshim's own pieces on this host.

    Exit status 1 when a required check (memory controller, writable cgroupfs) is missing.
    """
    report = run_doctor()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=False))
    else:
        for check in report.checks:
            click.echo(format_check(check))
    if not report.ok:
        raise SystemExit(1)
