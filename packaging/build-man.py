"""Write the man pages of the agentshim package: agentshim(1), agentshimd(8), agentshim-runtime(8).

    python3 packaging/build-man.py OUTDIR VERSION

agentshim(1) lists every subcommand with its usage, help text and options, read from the click
command tree of the source tree this script sits in (so it cannot fall behind `--help`); the
rest of each page is written here. Needs what `agentshim --help` needs (click, pyyaml, numpy).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SRC))

import click  # noqa: E402

from agentshim.cli import main as cli_main  # noqa: E402

SEE_ALSO = {
    "agentshim": ["agentshimd", "8", "agentshim-runtime", "8", "podman-run", "1",
                  "oci-hooks", "5"],
    "agentshimd": ["agentshim", "1", "agentshim-runtime", "8", "systemd.exec", "5"],
    "agentshim-runtime": ["agentshim", "1", "agentshimd", "8", "runc", "8", "crun", "1"],
}


def esc(text: str) -> str:
    """Text safe as troff input: backslashes, dashes, and control characters at line starts."""
    out = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        out.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(out)


def paragraphs(text: str) -> str:
    """click help text (paragraphs separated by blank lines) as troff paragraphs."""
    paras = [" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip()]
    return "\n.PP\n".join(esc(p) for p in paras)


def header(name: str, section: str, version: str, summary: str) -> str:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch)) if epoch else ""
    return (f'.TH {name.upper()} {section} "{date}" "agentshim {version}" '
            f'"agentshim"\n.SH NAME\n{esc(name)} \\- {esc(summary)}\n')


def see_also(name: str) -> str:
    refs = SEE_ALSO[name]
    items = [f".BR {refs[i]} ({refs[i + 1]})" for i in range(0, len(refs), 2)]
    return ".SH SEE ALSO\n" + ",\n".join(items) + "\n.PP\n/usr/share/doc/agentshim/README.md, " \
        "/usr/share/doc/agentshim/docs/*.md\n"


def commands(group: click.Group, path: list[str]) -> list[tuple[list[str], click.Command]]:
    """Every leaf command under group, depth first, in name order."""
    out: list[tuple[list[str], click.Command]] = []
    for name in sorted(group.commands):
        cmd = group.commands[name]
        if getattr(cmd, "hidden", False):
            continue
        if isinstance(cmd, click.Group):
            out += commands(cmd, path + [name])
        else:
            out.append((path + [name], cmd))
    return out


def command_section(path: list[str], cmd: click.Command) -> str:
    ctx = click.Context(cmd, info_name=" ".join(path))
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    lines = [f'.SS "{esc(" ".join(path))} {esc(usage)}"', paragraphs(cmd.help or "")]
    for param in cmd.get_params(ctx):
        rec = param.get_help_record(ctx)
        if rec is None or "--help" in rec[0]:
            continue
        lines += [".TP", f"\\fB{esc(rec[0])}\\fR", esc(" ".join(rec[1].split()) or "")]
    return "\n".join(lines) + "\n"


def agentshim_1(version: str) -> str:
    subs = "".join(command_section(p, c) for p, c in commands(cli_main, ["agentshim"]))
    return header("agentshim", "1", version,
                  "per-tool-call memory domains for AI coding agents in Podman containers") + r"""
.SH SYNOPSIS
.B agentshim
.RI [ \-\-version ]
.I COMMAND
.RI [ ARGS ...]
.SH DESCRIPTION
agentshim gives each Podman container run with an
.B io.agentshim.*
annotation a nested cgroup tree: the agent itself in
.IR framework/ ,
and every Bash tool call it runs in its own
.IR tools/call\-N ,
budgeted from a per\-container YAML policy and what the agent declares
(\fBAGENTSHIM_INTENT\fR).
The OCI hooks installed in
.I /usr/share/containers/oci/hooks.d
run the
.B agentshim hook
commands; the host daemon
.BR agentshimd (8)
serves the tool calls.
.SH ENABLING A CONTAINER
.TP
.B podman run \-\-annotation io.agentshim.enable=true IMAGE ...
the default profile, \fI/etc/agentshim/profiles/default.yaml\fR
.TP
.B podman run \-\-annotation io.agentshim.profile=NAME IMAGE ...
the profile \fI/etc/agentshim/profiles/NAME.yaml\fR
.TP
.B podman run \-\-annotation 'io.agentshim.policy=memory:;  total: 2G' IMAGE ...
an inline policy; podman cuts annotation values at newlines and commas, so \(oq;\(cq
separates lines
.PP
Containers without these annotations are not touched.
.SH COMMANDS
""" + subs + r""".SH FILES
.TP
.I /etc/agentshim/profiles/NAME.yaml
policy profiles (\fBagentshim policy validate\fR checks one)
.TP
.I /usr/share/containers/oci/hooks.d/agentshim\-*.json
the OCI hooks podman runs for annotated containers
.TP
.I /usr/libexec/agentshim/agentshim\-bash
the static Bash wrapper mounted over the image's bash
.TP
.I /var/lib/agentshim/calls/ID.jsonl
one record per tool call of container ID
.TP
.I /var/lib/agentshim/refusals.log
why a container's policy was refused
.SH ENVIRONMENT
.TP
.B AGENTSHIM_INTENT
(inside a container) what a tool call needs, e.g. \fImemory=2G,priority=low\fR
.TP
.BR AGENTSHIM_RUN_DIR ", " AGENTSHIM_STATE_DIR ", " AGENTSHIM_PROFILES_DIR
move \fI/run/agentshim\fR, \fI/var/lib/agentshim\fR, \fI/etc/agentshim/profiles\fR
""" + see_also("agentshim")


def agentshimd_8(version: str) -> str:
    return header("agentshimd", "8", version, "the agentshim host daemon") + r"""
.SH SYNOPSIS
.B agentshimd
.RB [ \-\-log\-level
.IR LEVEL ]
.SH DESCRIPTION
.B agentshimd
runs once per host, as root. It keeps the registry of the containers the agentshim OCI hooks
manage, listens on one broker socket per container (bind\-mounted into it at
\fI/run/agentshim/broker.sock\fR), and for every tool call the container's Bash wrapper starts
it checks the caller's cgroup, creates \fItools/call\-N\fR with the call's memory budget, moves
the caller in, and at the end appends a record to \fI/var/lib/agentshim/calls/ID.jsonl\fR.
A tool call stuck at its budget longer than the policy's \fIfreeze_timeout\fR is killed alone.
.PP
Where systemd runs, the package enables and starts \fBagentshimd.service\fR.
Elsewhere the prestart hook starts agentshimd when it is not running (its output goes to
\fI/var/lib/agentshim/agentshimd.log\fR); to start it by hand:
.PP
.RS
setsid /usr/sbin/agentshimd </dev/null >>/var/lib/agentshim/agentshimd.log 2>&1 &
.RE
.PP
A second agentshimd refuses to start while one runs. Stopped and started again, it adopts the
containers still running from its registry. SIGTERM stops it; running containers keep their
cgroup limits and their tool calls run unmanaged until it is back.
.SH OPTIONS
.TP
.BI \-\-log\-level " LEVEL"
debug, info (default), warning or error; also \fBAGENTSHIM_LOG_LEVEL\fR.
.SH FILES
.TP
.I /run/agentshim/agentshimd.sock
the control socket (root only): register, unregister, status
.TP
.I /run/agentshim/slots/SLOT/broker.sock
one per container
.TP
.I /var/lib/agentshim/containers/ID.json
the registry
.TP
.I /var/lib/agentshim/calls/ID.jsonl
per\-call records
.TP
.I /var/lib/agentshim/summaries/ID.json
per\-container summary written when the container stops
.SH ENVIRONMENT
.TP
.BR AGENTSHIM_RUN_DIR ", " AGENTSHIM_STATE_DIR
move \fI/run/agentshim\fR and \fI/var/lib/agentshim\fR (to run a private daemon)
""" + see_also("agentshimd")


def agentshim_runtime_8(version: str) -> str:
    return header("agentshim-runtime", "8", version,
                  "OCI runtime shim applying agentshim's container edits") + r"""
.SH SYNOPSIS
.B podman \-\-runtime /usr/bin/agentshim\-runtime run
.RI [ OPTIONS ] " IMAGE " ...
.SH DESCRIPTION
.B agentshim\-runtime
wraps the real OCI runtime for container engines that have no precreate hook stage. On
.B create
it applies the edits of
.B agentshim hook precreate
to the bundle's \fIconfig.json\fR (the Bash wrapper over the image's bash, the broker socket
directory) and then executes the real runtime; every other command passes through unchanged.
A refused policy makes \fBcreate\fR fail with the reason on standard error.
The prestart and poststop hooks are still needed for the cgroup tree and the daemon.
.SH ENVIRONMENT
.TP
.B AGENTSHIM_RUNTIME
the real runtime; default: runc on hybrid cgroup hosts, crun on cgroup v2
""" + see_also("agentshim-runtime")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out, version = Path(argv[1]), argv[2]
    out.mkdir(parents=True, exist_ok=True)
    (out / "agentshim.1").write_text(agentshim_1(version))
    (out / "agentshimd.8").write_text(agentshimd_8(version))
    (out / "agentshim-runtime.8").write_text(agentshim_runtime_8(version))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
