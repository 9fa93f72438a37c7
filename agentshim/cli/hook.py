"""`agentshim hook precreate|prestart|poststop`: the OCI hooks (stdin in, podman shows stderr)."""

from __future__ import annotations

import json
import sys

import click

from agentshim import hooks


@click.group()
def hook() -> None:
    """OCI hooks run by podman (see hooks/*.json)."""


def _fail(e: Exception) -> None:
    click.echo(str(e), err=True)
    sys.exit(1)


@hook.command()
def precreate() -> None:
    """Read config.json on stdin, write the edited config on stdout."""
    try:
        config = json.loads(sys.stdin.read())
        out = hooks.edit_config(config)
    except (ValueError, hooks.HookError) as e:
        _fail(e)
        return
    sys.stdout.write(json.dumps(out))


@hook.command()
def prestart() -> None:
    """Read the OCI state on stdin: build the tree, register with agentshimd."""
    try:
        msg = hooks.prestart(hooks.read_state(sys.stdin.read()))
    except hooks.HookError as e:
        _fail(e)
        return
    if msg.startswith("agentshim: warning"):
        click.echo(msg, err=True)


@hook.command()
def poststop() -> None:
    """Read the OCI state on stdin: unregister and remove the tree (idempotent)."""
    try:
        hooks.poststop(hooks.read_state(sys.stdin.read()))
    except hooks.HookError as e:
        _fail(e)
