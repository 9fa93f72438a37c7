"""`agentshim hook precreate|prestart|poststop`: the OCI hooks (stdin in, podman shows stderr).

The same as `agentshim-hook STAGE` (agentshim.hooks.main), which hooks/*.json use because it
starts faster (it does not load the whole command line).
"""

from __future__ import annotations

import sys

import click


@click.group()
def hook() -> None:
    """OCI hooks run by podman (see hooks/*.json)."""


def _run(stage: str) -> None:
    from agentshim.hooks import run_stage

    rc, out, err = run_stage(stage, sys.stdin.read())
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)
    sys.exit(rc)


@hook.command()
def precreate() -> None:
    """Read config.json on stdin, write the edited config on stdout."""
    _run("precreate")


@hook.command()
def prestart() -> None:
    """Read the OCI state on stdin: build the tree, register with agentshimd."""
    _run("prestart")


@hook.command()
def poststop() -> None:
    """Read the OCI state on stdin: unregister and remove the tree (idempotent)."""
    _run("poststop")
