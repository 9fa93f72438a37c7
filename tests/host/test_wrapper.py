"""agentshim-bash, the static /bin/bash wrapper, against a real unix-socket broker.

The broker here is a small socketserver in a thread that speaks the wrapper protocol
(docs/wrapper.md): it records every request with the SO_PEERCRED pid of its connection and
answers as each test tells it to.  The wrapper runs the host's /bin/bash as the real bash.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRAPPER_DIR = ROOT / "wrapper"
WRAPPER = WRAPPER_DIR / "agentshim-bash"
REAL_BASH = "/bin/bash"
UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

NOTICE = (
    "agentshim: call 7 (test) was frozen 3.1 s and killed: peak 2.1G > grant 2.0G\n"
    "agentshim: hint: run fewer test workers (pytest -n 2)\n"
)


@pytest.fixture(scope="session")
def wrapper() -> Path:
    """Build the wrapper once per session."""
    subprocess.run(["make", "-C", str(WRAPPER_DIR)], check=True, capture_output=True)
    assert WRAPPER.is_file()
    return WRAPPER


# ---- the broker -----------------------------------------------------------------------------


@dataclass
class Request:
    body: dict
    peer_pid: int


Reply = Callable[[dict], "bytes | dict | None"]


def default_reply(req: dict) -> dict:
    if req.get("op") == "start":
        return {
            "ok": True,
            "call": 7,
            "grant": 2 << 30,
            "category": "test",
            "priority": "normal",
            "notes": "",
        }
    return {"ok": True, "notice": ""}


@dataclass
class Broker:
    """What the test broker saw, and how it answers (reply returns a dict, raw bytes, or None
    to never answer)."""

    path: str
    reply: Reply = default_reply
    requests: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ops(self, op: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.body.get("op") == op]


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        broker: Broker = self.server.broker  # type: ignore[attr-defined]
        cred = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size)
        peer_pid, _, _ = UCRED.unpack(cred)
        line = self.rfile.readline()
        assert line.endswith(b"\n"), line[-100:]
        body = json.loads(line)
        with broker.lock:
            broker.requests.append(Request(body, peer_pid))
        answer = broker.reply(body)
        if answer is None:  # a broker that accepts but never answers
            broker.release.wait(timeout=30)
            return
        if isinstance(answer, dict):
            answer = json.dumps(answer).encode() + b"\n"
        self.wfile.write(answer)


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for sockets (sun_path holds 108 bytes; pytest's tmp_path may not)."""
    d = Path(tempfile.mkdtemp(prefix="asw-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def broker(sockdir: Path) -> Iterator[Broker]:
    path = str(sockdir / "broker.sock")
    b = Broker(path)
    server = _Server(path, _Handler)
    server.broker = b  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield b
    b.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# ---- running the wrapper --------------------------------------------------------------------


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes
    pid: int
    elapsed: float


def wrapper_env(socket_path: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSHIM_")}
    env.update(AGENTSHIM_REAL_BASH=REAL_BASH, AGENTSHIM_SOCKET=socket_path)
    env.update(extra)
    return env


def run(
    wrapper: Path,
    args: list[str],
    socket_path: str,
    *,
    input: bytes = b"",
    argv0: str | None = None,
    cwd: Path | None = None,
    timeout: float = 30,
    **env: str,
) -> Result:
    """Run the wrapper as bash with args; argv0 overrides argv[0] (default: the wrapper path)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [argv0 or str(wrapper), *args],
        executable=str(wrapper),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=wrapper_env(socket_path, **env),
        cwd=cwd,
    )
    out, err = proc.communicate(input, timeout=timeout)
    return Result(proc.returncode, out, err, proc.pid, time.monotonic() - t0)


def stderr_lines(res: Result) -> list[str]:
    return res.stderr.decode(errors="replace").splitlines()


# ---- the binary -----------------------------------------------------------------------------


def test_wrapper_is_statically_linked(wrapper: Path) -> None:
    """No PT_INTERP program header: it runs in any image, with or without a libc."""
    data = wrapper.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "expected a 64-bit ELF"
    (e_phoff,) = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0] for i in range(e_phnum)]
    PT_LOAD, PT_INTERP, PT_DYNAMIC = 1, 3, 2
    assert PT_LOAD in types
    assert PT_INTERP not in types
    assert PT_DYNAMIC not in types
    if shutil.which("file"):
        out = subprocess.run(["file", "-L", str(wrapper)], capture_output=True, text=True).stdout
        assert "statically linked" in out or "static-pie" in out, out


def test_c_unit_tests_pass(wrapper: Path) -> None:
    res = subprocess.run(["make", "-C", str(WRAPPER_DIR), "check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "test_toolcall:" in res.stdout and "0 failed" in res.stdout


# ---- what is not a tool call ----------------------------------------------------------------


def test_login_shell_reading_stdin_is_not_a_tool_call(wrapper: Path, broker: Broker) -> None:
    res = run(wrapper, ["-l"], broker.path, input=b"echo via-stdin; exit 5\n")
    assert res.returncode == 5
    assert b"via-stdin\n" in res.stdout
    assert broker.requests == []
    assert b"agentshim" not in res.stderr


def test_script_file_is_not_a_tool_call(wrapper: Path, broker: Broker, tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text('echo "script $1 $2"; exit 3\n')
    res = run(wrapper, [str(script), "a", "-c"], broker.path)
    assert (res.returncode, res.stdout) == (3, b"script a -c\n")
    assert broker.requests == []
    assert res.stderr == b""


def test_argv0_is_kept_for_login_shells(wrapper: Path, broker: Broker) -> None:
    """A "-bash" argv[0] makes bash a login shell; the wrapper must pass it on unchanged."""
    res = run(
        wrapper,
        [],
        broker.path,
        argv0="-bash",
        input=b"shopt -q login_shell && echo is-login; echo $0\n",
    )
    assert b"is-login\n-bash\n" in res.stdout
    assert broker.requests == []


def test_interactive_c_is_not_a_tool_call(wrapper: Path, broker: Broker) -> None:
    res = run(wrapper, ["-i", "-c", "echo inter"], broker.path)
    assert b"inter\n" in res.stdout
    assert broker.requests == []


def test_missing_real_bash(wrapper: Path, broker: Broker) -> None:
    for args in ([], ["-c", "echo x"]):
        res = run(wrapper, args, broker.path, AGENTSHIM_REAL_BASH="/nonexistent/bash")
        assert res.returncode == 127
        assert res.stderr == (
            b"agentshim-bash: real bash not found at /nonexistent/bash: No such file or directory\n"
        )
    assert broker.requests == []


def test_real_bash_that_is_the_wrapper_is_refused(wrapper: Path, broker: Broker) -> None:
    res = run(wrapper, ["-c", "echo x"], broker.path, AGENTSHIM_REAL_BASH=str(wrapper))
    assert res.returncode == 126
    assert res.stderr == f"agentshim-bash: real bash at {wrapper} is this wrapper\n".encode()
    assert broker.requests == []


# ---- tool calls -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts", [["-c"], ["-lc"], ["-c", "-l"], ["--login", "-c"], ["-o", "pipefail", "-ec"]]
)
def test_tool_call_is_registered_with_full_argv(
    wrapper: Path, broker: Broker, tmp_path: Path, opts: list[str]
) -> None:
    cmd = 'echo "pid=$$ arg0=$0 arg1=$1"'
    res = run(
        wrapper,
        [*opts, cmd, "zero", "one"],
        broker.path,
        cwd=tmp_path,
        AGENTSHIM_INTENT="run the unit tests",
        HOME=str(tmp_path),  # login shells: no user profile of this host (pyenv & co.)
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == b""
    last = res.stdout.decode().splitlines()[-1]  # a login shell may print from its profile
    assert last.endswith(" arg0=zero arg1=one"), res.stdout

    (start,) = broker.ops("start")
    assert start.body == {
        "op": "start",
        "argv": [str(wrapper), *opts, cmd, "zero", "one"],
        "cwd": str(tmp_path.resolve()),
        "intent": "run the unit tests",
        "ppid": os.getpid(),  # the process that ran "bash"
    }
    # SO_PEERCRED names the process that then became bash and ran the command
    assert last.startswith(f"pid={start.peer_pid} "), (last, start.peer_pid)
    assert start.peer_pid != res.pid

    (end,) = broker.ops("end")
    assert end.body == {"op": "end", "call": 7, "status": 0, "signal": 0}


def test_intent_defaults_to_empty(wrapper: Path, broker: Broker) -> None:
    res = run(wrapper, ["-c", "true"], broker.path)
    assert res.returncode == 0
    (start,) = broker.ops("start")
    assert start.body["intent"] == ""


def test_huge_and_unusual_argv_is_sent_exactly(wrapper: Path, broker: Broker) -> None:
    """A Claude-Code-sized script (120 KB; one argument may hold 128 KiB) and 300 KB more of
    arguments, with quotes, backslashes, control bytes and UTF-8."""
    odd = 'q"uo\\te\ttab\x01\x1f\x7f caf\u00e9 \U0001f600 '
    cmd = ": '" + "x" * 120_000 + "'; printf '%s' \"$1\""
    more = ['y"\\\n' * 25_000] * 3
    res = run(wrapper, ["-c", "-l", cmd, "zero", odd, *more], broker.path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().endswith(odd)
    (start,) = broker.ops("start")
    assert start.body["argv"] == [str(wrapper), "-c", "-l", cmd, "zero", odd, *more]


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_code_propagates(wrapper: Path, broker: Broker, code: int) -> None:
    res = run(wrapper, ["-c", f"exit {code}"], broker.path)
    assert res.returncode == code
    (end,) = broker.ops("end")
    assert end.body == {"op": "end", "call": 7, "status": code, "signal": 0}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_death_by_signal_propagates(wrapper: Path, broker: Broker, sig: signal.Signals) -> None:
    res = run(wrapper, ["-c", f"kill -{sig.name[3:]} $$"], broker.path)
    plain = subprocess.run([REAL_BASH, "-c", f"kill -{sig.name[3:]} $$"])
    assert res.returncode == plain.returncode == -sig
    (end,) = broker.ops("end")
    assert end.body == {"op": "end", "call": 7, "status": 128 + sig, "signal": int(sig)}


def test_stdio_passes_through_byte_exact(wrapper: Path, broker: Broker) -> None:
    """10 MB of binary stdin comes back on stdout, binary stderr too, nothing added."""
    data = os.urandom(10 << 20) + bytes(range(256))
    res = run(wrapper, ["-c", "cat; printf 'err\\000\\377\\n' >&2"], broker.path, input=data)
    assert res.returncode == 0
    assert res.stdout == data
    assert res.stderr == b"err\x00\xff\n"


def test_large_stdout(wrapper: Path, broker: Broker) -> None:
    res = run(wrapper, ["-c", "head -c 10485760 /dev/zero | tr '\\0' 'z'"], broker.path)
    assert res.returncode == 0
    assert len(res.stdout) == 10 << 20 and res.stdout.count(b"z") == 10 << 20


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1])
def test_signal_to_wrapper_reaches_the_command(
    wrapper: Path, broker: Broker, tmp_path: Path, sig: signal.Signals
) -> None:
    mark = tmp_path / "trapped"
    name = sig.name[3:]
    script = (
        f"trap 'echo {name} > \"{mark}\"; kill $pid; exit 7' {name}; "
        "sleep 30 & pid=$!; echo ready; wait $pid"
    )
    proc = subprocess.Popen(
        [str(wrapper), "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=wrapper_env(broker.path),
    )
    try:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 7
    finally:
        proc.kill()
        proc.communicate()
    assert mark.read_text() == f"{name}\n"
    (end,) = broker.ops("end")
    assert end.body["status"] == 7


@pytest.mark.skipif(not shutil.which("setsid"), reason="needs setsid(1) from util-linux")
@pytest.mark.parametrize("prog", [REAL_BASH, "wrapper"])
def test_ctrl_c_on_a_terminal_reaches_the_command_once(
    wrapper: Path, sockdir: Path, tmp_path: Path, prog: str
) -> None:
    """^C on a terminal signals the whole foreground process group, the command included;
    the wrapper must not forward its own copy.  Plain bash runs the trap once; a wrapper that
    forwarded terminal signals would make it run twice in most attempts (the two copies merge
    when both arrive before bash handles the first), hence three attempts."""
    for attempt in range(3):
        mark = tmp_path / f"int{attempt}"
        # the background sleep ignores SIGINT; each SIGINT ends one `wait` and runs the trap
        script = (
            f"trap 'echo INT >> \"{mark}\"' INT; sleep 0.3 & pid=$!; echo ready; "
            "wait $pid; wait $pid; wait $pid"
        )
        master, slave = pty.openpty()
        argv = [str(wrapper) if prog == "wrapper" else prog, "-c", script]
        proc = subprocess.Popen(
            ["setsid", "--ctty", *argv],  # session leader with the pty as its terminal
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=wrapper_env(str(sockdir / "none.sock")),
        )
        os.close(slave)
        try:
            seen = b""
            while b"ready" not in seen:
                seen += os.read(master, 1024)
            time.sleep(0.05)
            os.write(master, b"\x03")
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
            proc.wait()
            os.close(master)
        assert mark.read_text() == "INT\n", f"attempt {attempt}"


def test_sigkill_of_the_wrapper_takes_the_command_down(wrapper: Path, broker: Broker) -> None:
    """Like a SIGKILL to a plain bash: the process running the script dies with it."""
    proc = subprocess.Popen(
        [str(wrapper), "-c", "echo $$; exec sleep 30"],
        stdout=subprocess.PIPE,
        env=wrapper_env(broker.path),
    )
    try:
        cmd_pid = int(proc.stdout.readline())
        proc.kill()
        proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(cmd_pid):
            time.sleep(0.02)
        assert not _alive(cmd_pid)
    finally:
        proc.kill()
        proc.communicate()


def _alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_wrapper_stops_and_continues_with_the_command(wrapper: Path, broker: Broker) -> None:
    """When the command stops, the wrapper stops too (job control sees it); SIGCONT to the
    wrapper resumes both."""
    proc = subprocess.Popen(
        [str(wrapper), "-c", "echo ready; kill -STOP $$; echo resumed"],
        stdout=subprocess.PIPE,
        env=wrapper_env(broker.path),
    )
    try:
        assert proc.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _state(proc.pid) != "T":
            time.sleep(0.02)
        assert _state(proc.pid) == "T"
        proc.send_signal(signal.SIGCONT)
        assert proc.stdout.readline() == b"resumed\n"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()


# ---- notes and notices ----------------------------------------------------------------------


def test_notes_and_end_notice_are_printed(wrapper: Path, broker: Broker) -> None:
    def reply(req: dict) -> dict:
        if req["op"] == "start":
            return {
                "ok": True,
                "call": 12,
                "grant": 2147483648,
                "category": "test",
                "priority": "normal",
                "notes": "asked 4G, granted 2G (tools budget)",
            }
        return {"ok": True, "notice": NOTICE}

    broker.reply = reply
    res = run(wrapper, ["-c", "echo out; echo err >&2; exit 137"], broker.path)
    assert res.returncode == 137
    assert res.stdout == b"out\n"
    assert res.stderr.decode() == (
        "agentshim: asked 4G, granted 2G (tools budget)\n" + "err\n" + NOTICE
    )
    (end,) = broker.ops("end")
    assert end.body == {"op": "end", "call": 12, "status": 137, "signal": 0}


def test_notes_are_kept_on_one_line_and_notice_gets_a_newline(
    wrapper: Path, broker: Broker
) -> None:
    def reply(req: dict) -> dict:
        if req["op"] == "start":
            return {"ok": True, "call": 1, "notes": "two\nlines \u00e9"}
        return {"ok": True, "notice": "agentshim: no newline"}

    broker.reply = reply
    res = run(wrapper, ["-c", "true"], broker.path)
    assert res.stderr.decode() == "agentshim: two lines \u00e9\nagentshim: no newline\n"


def test_end_failure_is_one_warning_and_keeps_the_status(wrapper: Path, broker: Broker) -> None:
    broker.reply = lambda req: default_reply(req) if req["op"] == "start" else b"garbage\n"
    res = run(wrapper, ["-c", "echo ok; exit 9"], broker.path)
    assert (res.returncode, res.stdout) == (9, b"ok\n")
    assert stderr_lines(res) == [
        "agentshim: could not report the end of call 7 (malformed reply from broker)"
    ]


# ---- fail-open ------------------------------------------------------------------------------


def test_no_socket_runs_unmanaged(wrapper: Path, sockdir: Path) -> None:
    path = str(sockdir / "missing.sock")
    res = run(wrapper, ["-lc", "echo still-ran; exit 4"], path, HOME=str(sockdir))
    assert res.returncode == 4
    assert res.stdout.decode().splitlines()[-1] == "still-ran"
    assert stderr_lines(res) == [f"agentshim: running unmanaged (no broker socket at {path})"]


def test_socket_without_listener_runs_unmanaged(wrapper: Path, sockdir: Path) -> None:
    path = str(sockdir / "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # bound but never listening: connection refused
    try:
        res = run(wrapper, ["-c", "echo ran"], path)
    finally:
        s.close()
    assert (res.returncode, res.stdout) == (0, b"ran\n")
    (line,) = stderr_lines(res)
    assert line.startswith("agentshim: running unmanaged (cannot connect to ")
    assert "Connection refused" in line


def test_silent_broker_runs_unmanaged_after_the_timeout(wrapper: Path, broker: Broker) -> None:
    broker.reply = lambda req: None
    res = run(wrapper, ["-c", "echo ran"], broker.path, AGENTSHIM_TIMEOUT_MS="300")
    assert res.elapsed < 3
    assert (res.returncode, res.stdout) == (0, b"ran\n")
    assert stderr_lines(res) == [
        "agentshim: running unmanaged (no reply from broker within 300 ms)"
    ]
    assert len(broker.ops("start")) == 1 and broker.ops("end") == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            {"ok": False, "error": "pid 1 is not in\nthis container"},
            "broker refused: pid 1 is not in this container",
        ),
        ({"ok": False}, "broker refused: no reason given"),
        ({"ok": True}, "malformed reply from broker"),
        ({"ok": True, "call": "7"}, "malformed reply from broker"),
        (b'{"ok":true,"call":7\n', "malformed reply from broker"),
        (b"", "broker closed the connection without a reply"),
    ],
)
def test_bad_start_replies_run_unmanaged(
    wrapper: Path, broker: Broker, answer: dict | bytes, reason: str
) -> None:
    broker.reply = lambda req: answer
    res = run(wrapper, ["-c", "echo ran; exit 3"], broker.path)
    assert (res.returncode, res.stdout) == (3, b"ran\n")
    assert stderr_lines(res) == [f"agentshim: running unmanaged ({reason})"]
    assert broker.ops("end") == []  # call -1: nothing to end


def test_nested_call_runs_without_warning_or_end(wrapper: Path, broker: Broker) -> None:
    """agentshimd answers call -1 to a tool call made from inside another call: the enclosing
    call's cgroup keeps it, and there is nothing to end."""
    broker.reply = lambda req: {"ok": True, "call": -1, "nested": True, "notes": ""}
    res = run(wrapper, ["-c", "echo ran"], broker.path)
    assert (res.returncode, res.stdout, res.stderr) == (0, b"ran\n", b"")
    assert len(broker.ops("start")) == 1 and broker.ops("end") == []


def test_reply_without_trailing_newline_is_accepted(wrapper: Path, broker: Broker) -> None:
    broker.reply = lambda req: json.dumps(default_reply(req)).encode()
    res = run(wrapper, ["-c", "echo ran"], broker.path)
    assert (res.returncode, res.stdout, res.stderr) == (0, b"ran\n", b"")
    assert len(broker.ops("end")) == 1
