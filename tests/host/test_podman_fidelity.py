"""Byte-for-byte fidelity: stdout, stderr, exit status and death by signal of every tool call
made through the wrapper are those of the image's own bash, in the same container.

A driver (python3, not bash, so not a tool call itself) runs inside a managed container of the
python test image. For each case it runs `bash OPTS CMD [ARGS]` three times, each in a fresh
/work/run as cwd, in its own session, stdin from the case: plain bash
(/run/agentshim/bash.real, with argv[0] "bash"), then the wrapper (/usr/bin/bash), then plain
bash again. A case whose two plain runs differ is nondeterministic (time, pids, state it
changed) and is not compared; every other wrapped run must equal the plain ones exactly.

The corpus is a hand-written set (exit codes, signals, binary and large output, stdin, option
forms) that must all be deterministic, plus Bash commands of real agents from
../shared/traces/*/*/tool_calls.json, selected by `trace_programs()`:
  - shlex can split the command and it has no backquotes (programs hidden in them);
  - every program it runs (the first word of each simple command, after assignments and
    redirections, also what xargs/timeout/env/nice/nohup/command/exec and find -exec run; heredoc
    bodies skipped; `for` lists skipped; `case` and functions not handled: such commands are
    left out) is a bash builtin or keyword or a program of the test image;
  - none of those programs is in DENY: network tools, system administration, `kill` (it could
    hit pid 1), time or process listings (date, ps, ...), interactive ones, sleep.
The container runs with --network none. A run over 10 s is a timeout and the case is dropped.
"""

from __future__ import annotations

import base64
import glob
import json
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.podman_support import PY_IMAGE, REPO, agentshim_fixture, run_container

TRACES = REPO.parent / "shared" / "traces"
MAX_TRACE_COMMANDS = 400
MIN_COMPARED_TRACE_COMMANDS = 100

BUILTINS = frozenset("""
alias bg bind break builtin caller cd command compgen complete compopt continue declare dirs
disown echo enable eval exec exit export false fc fg getopts hash help history jobs kill let
local logout mapfile popd printf pushd pwd read readarray readonly return set shift shopt source
suspend test times trap true type typeset ulimit umask unalias unset wait . : [ [[ ]]
""".split())  # noqa: SIM905
KEYWORDS = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!",
                      "{", "}", "]]"})
RUNNERS = frozenset({"xargs", "timeout", "env", "nice", "nohup", "command", "exec", "builtin"})
SEPARATORS = frozenset({";", "&&", "||", "|", "&", "(", ")", "|&", "\n", ";&"})
DENY = frozenset("""
wget nc ping ping6 telnet telnetd ftpget ftpput tftp ssl_client nslookup traceroute traceroute6
httpd udhcpc udhcpd arp arping ifconfig ip route ipneigh netstat ifup ifdown
reboot halt poweroff init kill killall pkill mount umount swapon swapoff modprobe insmod rmmod
sysctl hwclock nsenter unshare chroot su login passwd getty crond syslogd klogd setsid
date uptime ps top free w who last time watch dmesg df
vi less more sleep usleep shuf mktemp
""".split())  # noqa: SIM905
OPERATORS = ("<<-", "<<", ">>", "&&", "||", ";;", "|&", ">&", "<&", "&>", ";&", ">|", "<>", "(",
             ")", ";", "|", "&", "<", ">", "\n")
PUNCTUATION = "();<>|&\n"


def split_operators(tok: str) -> list[str]:
    """shlex joins runs of punctuation (`)\n`, `);`): split them into bash operators."""
    if not tok or any(ch not in PUNCTUATION for ch in tok):
        return [tok]
    out = []
    while tok:
        op = next(o for o in OPERATORS if tok.startswith(o))
        out.append(op)
        tok = tok[len(op):]
    return out


def trace_programs(cmd: str) -> set[str] | None:
    """The programs a command line runs (see the module docstring), None when not parsed."""
    if "`" in cmd or len(cmd) > 8000:
        return None
    lex = shlex.shlex(cmd, posix=True, punctuation_chars=PUNCTUATION)
    lex.whitespace = " \t\r"
    lex.whitespace_split = True
    try:
        toks = [op for tok in lex for op in split_operators(tok)]
    except ValueError:
        return None
    progs: set[str] = set()
    i, at_cmd, heredocs = 0, True, []
    while i < len(toks):
        t = toks[i]
        if t == "\n" and heredocs:
            for delim in heredocs:  # skip each body up to its delimiter line
                i += 1
                while i < len(toks) and not (toks[i] == delim and toks[i - 1] == "\n"
                                             and (i + 1 == len(toks) or toks[i + 1] == "\n")):
                    i += 1
            heredocs, at_cmd = [], True
            i += 1
            continue
        if t == ";;":
            return None
        if t in SEPARATORS:
            at_cmd = True
            i += 1
            continue
        if t[0] in "<>" and set(t) <= set("<>&|-"):
            if t in ("<<", "<<-") and i + 1 < len(toks):
                heredocs.append(toks[i + 1])
            i += 2
            continue
        if t in ("case", "function"):
            return None
        if t in ("for", "select"):
            while i < len(toks) and toks[i] not in SEPARATORS:
                i += 1
            continue
        if at_cmd:
            if t in KEYWORDS or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", t):
                i += 1
                continue
            if t.isdigit() and i + 1 < len(toks) and toks[i + 1][0] in "<>":
                i += 1
                continue
            progs.add(t)
            at_cmd = t in RUNNERS
            i += 1
            while at_cmd and i < len(toks) and (
                    toks[i].startswith("-") or (t == "timeout" and toks[i][0].isdigit())
                    or (t == "env" and "=" in toks[i])):
                i += 1
            continue
        if t in ("-exec", "-execdir", "-ok"):
            at_cmd = True
        i += 1
    return progs


def trace_commands(available: set[str]) -> list[str]:
    """Distinct Bash commands of the shared traces that the rule selects, in trace order."""
    cmds: list[str] = []
    for f in sorted(glob.glob(str(TRACES / "*" / "*" / "tool_calls.json"))):
        for call in json.loads(Path(f).read_text()):
            inp = call.get("input")
            if call.get("tool") == "Bash" and isinstance(inp, dict) and \
                    isinstance(inp.get("command"), str):
                cmds.append(inp["command"])
    allowed = (available | BUILTINS | KEYWORDS) - DENY
    out = []
    for c in dict.fromkeys(cmds):
        progs = trace_programs(c)
        if progs is not None and progs <= allowed:
            out.append(c)
    return out


DRIVER = r"""
import base64, json, os, shutil, signal, subprocess, sys
REAL, WRAPPER, CWD = "/run/agentshim/bash.real", "/usr/bin/bash", "/work/run"
def run(exe, case):
    shutil.rmtree(CWD, ignore_errors=True)
    os.makedirs(CWD)
    p = subprocess.Popen(["bash", *case["opts"], case["cmd"], *case["args"]], executable=exe,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=CWD, start_new_session=True)
    try:
        out, err = p.communicate(base64.b64decode(case["stdin"]), timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return None
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # what the command left running in its session
        except ProcessLookupError:
            pass
    return [p.returncode, base64.b64encode(out).decode(), base64.b64encode(err).decode()]
for line in sys.stdin:
    case = json.loads(line)
    res = [run(REAL, case), run(WRAPPER, case), run(REAL, case)]
    print(json.dumps(res), flush=True)
"""

HANDWRITTEN: list[tuple[list[str], str, bytes, list[str]]] = [
    (["-c"], "echo hello", b"", []),
    (["-c"], "", b"", []),
    (["-c"], r"printf 'a\0b\377\n'; printf 'err\0\n' >&2", b"", []),
    (["-c"], "echo out; echo err >&2; echo out2; exit 3", b"", []),
    (["-c"], "exit 1", b"", []),
    (["-c"], "exit 42", b"", []),
    (["-c"], "exit 255", b"", []),
    (["-c"], "exit 256", b"", []),
    (["-c"], "false", b"", []),
    (["-c"], "nonexistent-command-xyz", b"", []),
    (["-c"], "/etc/passwd", b"", []),
    (["-c"], "syntax error (", b"", []),
    (["-c"], "set -u; echo $undefined_var", b"", []),
    (["-c"], "ulimit -c 0; kill -TERM $$", b"", []),
    (["-c"], "ulimit -c 0; kill -KILL $$", b"", []),
    (["-c"], "ulimit -c 0; kill -INT $$", b"", []),
    (["-c"], "ulimit -c 0; kill -HUP $$", b"", []),
    (["-c"], "ulimit -c 0; kill -USR1 $$", b"", []),
    (["-c"], "ulimit -c 0; kill -PIPE $$", b"", []),
    (["-c"], "ulimit -c 0; kill -SEGV $$", b"", []),
    (["-c"], "ulimit -c 0; kill -ABRT $$", b"", []),
    (["-c"], "trap 'echo trapped' TERM; kill -TERM $$; echo after", b"", []),
    (["-c"], "trap 'echo bye; exit 4' EXIT; echo hi", b"", []),
    (["-c"], "exec python3 -c 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'", b"",
     []),
    (["-c"], "python3 -c 'import os; os._exit(77)'", b"", []),
    (["-c"], "ulimit -c 0; sh -c 'kill -TERM $$'; echo $?", b"", []),
    (["-c"], "seq 1 200000", b"", []),
    (["-c"], "yes abcdefgh | head -c 5000000", b"", []),
    (["-c"], r"head -c 3000000 /dev/zero | tr '\0' '\377'", b"", []),
    (["-c"], "cat; echo; wc -c", b"line1\nline2\x00\xff\n" * 1000, []),
    (["-c"], 'read a b; echo "[$b][$a]"', b"x y\n", []),
    (["-c"], 'echo "$0|$1|$2|$#"', b"", ["zero", "one", "two"]),
    (["-c"], r"echo é ü 日本; printf '\xe9\n'", b"", []),
    (["-c"], "sleep 0.1 & wait; echo waited", b"", []),
    (["-c"], "(exit 5); echo $?", b"", []),
    (["-c"], "for i in 1 2 3; do echo $i; done | tac", b"", []),
    (["-c"], "bash -c 'echo nested $BASH_SUBSHELL'; echo $?", b"", []),
    (["-c"], "echo ${BASH_VERSINFO[0]} $SHLVL $BASH", b"", []),
    (["-c"], "env | grep -v '^_=' | sort", b"", []),
    (["-c"], "ls -la /run/agentshim /usr/bin/bash | wc -l", b"", []),
    (["-lc"], "echo login $0 $#; shopt -q login_shell && echo is-login", b"", []),
    (["-c", "-l"], ". /dev/null && eval 'echo claude-style' < /dev/null && pwd -P", b"", []),
    (["--login", "-c"], "shopt login_shell", b"", []),
    (["-e", "-c"], "false; echo never", b"", []),
    (["-o", "pipefail", "-c"], "false | true", b"", []),
    (["-x", "-c"], "echo traced", b"", []),
    (["-c"], "python3 -c 'import sys; sys.stdout.write(\"x\" * 100000); sys.exit(3)'", b"",
     []),
]


ash = agentshim_fixture("ashim-fid", python=True)


def case(opts: list[str], cmd: str, stdin: bytes = b"", args: list[str] | None = None) -> dict:
    return {"opts": opts, "cmd": cmd, "stdin": base64.b64encode(stdin).decode(),
            "args": args or []}


def run_corpus(c, cases: list[dict]) -> list[list]:
    payload = "".join(json.dumps(x) + "\n" for x in cases)
    r = c.exec("python3", "-c", DRIVER, input=payload, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.splitlines()]


def show(res) -> str:
    if res is None:
        return "timeout"
    rc, out, err = res
    return (f"rc={rc} stdout={base64.b64decode(out)[:300]!r} "
            f"stderr={base64.b64decode(err)[:300]!r}")


@dataclass
class Outcome:
    results: list[list]
    compared: list[str] = field(default_factory=list)
    nondeterministic: list[str] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)


def compare(ash, cases: list[dict]) -> Outcome:
    """Run the cases in a fresh managed container of the python image; fail on any wrapped
    run that differs from the plain ones."""
    policy = "memory:;  total: 4G;  tool_default: 2G"
    with run_container(ash.hooked, ash.name(), "--network", "none",
                       "--annotation", f"io.agentshim.policy={policy}", image=PY_IMAGE) as c:
        c.exec("mkdir", "-p", "/testbed", check=True)
        c.podman("cp", str(REPO / "agentshim"), f"{c.name}:/testbed/agentshim")
        c.podman("cp", str(REPO / "README.md"), f"{c.name}:/testbed/README.md")
        results = run_corpus(c, cases)
        assert len(results) == len(cases)
        o = Outcome(results)
        mismatches = []
        for x, (plain1, wrapped, plain2) in zip(cases, results, strict=True):
            if plain1 is None or wrapped is None or plain2 is None:
                o.timeouts.append(x["cmd"])
            elif plain1 != plain2:
                o.nondeterministic.append(x["cmd"])
            elif wrapped != plain1:
                mismatches.append(f"{x['cmd'][:200]!r}\n  plain:   {show(plain1)}\n"
                                  f"  wrapped: {show(wrapped)}")
            else:
                o.compared.append(x["cmd"])
        assert mismatches == [], "\n".join(mismatches)
        # every wrapped run was a managed tool call with its record (plain runs that start
        # `bash -c` themselves add calls of their own)
        recorded = Counter(r["command"] for r in ash.records(c.id))
        missing = Counter(x["cmd"] for x in cases) - recorded
        assert not missing, missing
        return o


def test_handwritten_corpus_is_byte_for_byte_plain_bash(ash):
    cases = [case(*x) for x in HANDWRITTEN]
    o = compare(ash, cases)
    assert (o.nondeterministic, o.timeouts) == ([], [])
    assert len(o.compared) == len(cases)
    signals = sorted({-w[0] for _, w, _ in o.results if w[0] < 0})
    assert signals == [1, 2, 6, 9, 10, 11, 13, 15], signals


def test_agent_trace_commands_are_byte_for_byte_plain_bash(ash):
    if not TRACES.is_dir():
        pytest.skip(f"{TRACES} is absent: no real agent commands to compare")
    available = set(ash.podman("run", "--rm", PY_IMAGE, "ls", "/usr/bin").stdout.split())
    traced = trace_commands(available)[:MAX_TRACE_COMMANDS]
    o = compare(ash, [case(["-c"], t) for t in traced])
    print(f"fidelity: {len(o.compared)} agent trace commands compared byte for byte "
          f"({len(traced)} selected, {len(o.nondeterministic)} nondeterministic, "
          f"{len(o.timeouts)} timed out)")
    assert len(o.compared) >= MIN_COMPARED_TRACE_COMMANDS


def test_trace_selection_rule():
    assert trace_programs("cd /x && grep -n foo a.py | head -5 2>&1") == {
        "cd", "grep", "head"}
    assert trace_programs("find . -name '*.py' -exec grep -l x {} \\; | xargs -r wc -l") == {
        "find", "grep", "xargs", "wc"}
    assert trace_programs("python3 << 'EOF'\nimport os\nprint(1)\nEOF\necho done") == {
        "python3", "echo"}
    assert trace_programs("X=1 timeout 5 git status") == {"timeout", "git"}
    assert trace_programs("(cd a);ls\nwc") == {"cd", "ls", "wc"}
    assert trace_programs("echo `date`") is None
    assert trace_programs("case x in a) ls;; esac") is None
    assert trace_programs("for f in a b; do cat $f; done") == {"cat"}
