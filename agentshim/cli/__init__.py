"""The `agentshim` command line: one click group, one module per subcommand."""

from __future__ import annotations

import click

from agentshim import __version__
from agentshim.cli.demo import demo
from agentshim.cli.doctor import doctor
from agentshim.cli.hook import hook
from agentshim.cli.policy import policy
from agentshim.cli.replay import replay
from agentshim.cli.report import report
from agentshim.cli.trace import trace


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agentshim")
def main() -> None:
    """agentshim: per-tool-call memory domains for AI coding agents in Podman containers."""


main.add_command(doctor)
main.add_command(hook)
main.add_command(policy)
main.add_command(replay)
main.add_command(report)
main.add_command(demo)
main.add_command(trace)
