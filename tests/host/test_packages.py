"""The agentshim packages for real: `make deb` installed with dpkg, a podman container run with
the annotation and managed by the installed hooks and agentshimd (the system python3 and the
packaged code, not this checkout's venv), then `dpkg --purge`: nothing of ours left. `make rpm`
checked with rpm -qlp / --requires. Both versions are agentshim.__version__.

While the package is installed its hooks in /usr/share/containers/oci/hooks.d apply to every
podman container with io.agentshim.* annotations run without --hooks-dir: the window is kept
short, and the package is purged even when the test fails. Whatever was at the package's paths
before (`make install` puts the wrapper, hooks and default profile there; earlier runs leave
/var/lib/agentshim) is moved aside and put back afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentshim
from agentshim.cgroups import Cgroup, detect_layout
from agentshim.cli import main as cli_main
from agentshim.protocol import DaemonUnavailable, request

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/agentshim-test:latest"
LIB = Path("/usr/share/agentshim")
RUN = Path("/run/agentshim")
STATE = Path("/var/lib/agentshim")
HOOKS_D = Path("/usr/share/containers/oci/hooks.d")
UNIT = "agentshimd.service"
DEPENDS = ["python3", "python3-bpfcc", "python3-yaml", "python3-psutil",
           "python3-click", "python3-numpy", "podman", "runc | crun"]
REQUIRES = ["python3", "python3-bcc", "python3-pyyaml", "python3-psutil",
            "python3-click", "python3-numpy", "podman", "(runc or crun)"]
# names of the BPF programs (functions of bpf/memevents.bpf.c): bpftool shows 15 characters
BPF_PREFIX = "ashim_"


def pkg_version() -> str:
    """agentshim.__version__ as both packages spell it (PEP 440 pre-releases with '~')."""
    v = re.sub(r"\.?(a|b|rc|dev)(\d+)", r"~\1\2", agentshim.__version__, count=1)
    return re.sub(r"\.post(\d+)", r"+post\1", v)


def clean_env() -> dict[str, str]:
    """This environment without AGENTSHIM_* (the hooks inherit podman's environment) and
    PYTHON* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AGENTSHIM_", "PYTHON"))}


def run(*cmd: str, check: bool = True, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                       env=kw.pop("env", clean_env()), **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (packaging/setup-host.sh installs them)")


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    """`make deb` into a private dist directory."""
    need("dpkg-deb", "gcc", "make")
    out = tmp_path_factory.mktemp("dist-deb")
    env = clean_env() | {"DIST_DIR": str(out), "WORK_DIR": str(out / "work")}
    run("make", "-s", "-C", str(REPO), "deb", env=env)
    arch = run("dpkg", "--print-architecture").stdout.strip()
    path = out / f"agentshim_{pkg_version()}_{arch}.deb"
    assert path.exists(), f"make deb did not write {path.name}: {sorted(os.listdir(out))}"
    return path


@pytest.fixture(scope="module")
def deb_tree(deb: Path, tmp_path_factory) -> Path:
    """The .deb's files, unpacked (dpkg-deb -x)."""
    d = tmp_path_factory.mktemp("deb-tree")
    run("dpkg-deb", "-x", str(deb), str(d))
    return d


@pytest.fixture(scope="module")
def rpm(tmp_path_factory) -> Path:
    """`make rpm` into a private dist directory."""
    need("rpmbuild", "rpm", "gcc", "make")
    out = tmp_path_factory.mktemp("dist-rpm")
    run("make", "-s", "-C", str(REPO), "rpm",
        env=clean_env() | {"DIST_DIR": str(out), "WORK_DIR": str(out / "work")})
    path = out / f"agentshim-{pkg_version()}-1.{platform.machine()}.rpm"
    assert path.exists(), f"make rpm did not write {path.name}: {sorted(os.listdir(out))}"
    return path


def deb_files(deb: Path) -> set[str]:
    """Paths of the regular files and symlinks in a .deb."""
    out = set()
    for line in run("dpkg-deb", "-c", str(deb)).stdout.splitlines():
        if line[0] in "-l":
            out.add(line.split(None, 5)[5].split(" -> ")[0].removeprefix("."))
    return out


def python_sources() -> set[str]:
    """The package's Python files and data (the demo's traces), as this checkout has them."""
    data = [p for p in (REPO / "agentshim" / "replay" / "demo_traces").rglob("*") if p.is_file()]
    return {str(p.relative_to(REPO)) for p in [*(REPO / "agentshim").rglob("*.py"), *data]
            if "__pycache__" not in p.parts}


# --- the .deb and the .rpm as files ---------------------------------------------------------

def test_deb_control_files_and_version(deb: Path, deb_tree: Path) -> None:
    field = {f: run("dpkg-deb", "-f", str(deb), f).stdout.strip()
             for f in ("Package", "Version", "Architecture", "Depends", "Recommends")}
    assert field["Package"] == "agentshim"
    assert field["Version"] == pkg_version()
    assert field["Architecture"] == run("dpkg", "--print-architecture").stdout.strip()
    depends = [re.sub(r" \((>=|>>|=) [^)]*\)", "", d.strip()) for d in field["Depends"].split(",")]
    assert "python3 (>= 3.11)" in field["Depends"]
    assert all(d in depends for d in DEPENDS), depends
    assert "python3-matplotlib" in field["Recommends"]  # only `report --plots` imports it

    files = deb_files(deb)
    expected = {"/usr/bin/agentshim", "/usr/bin/agentshim-runtime", "/usr/sbin/agentshimd",
                "/usr/libexec/agentshim/agentshim-bash", "/usr/libexec/agentshim/agentshim-maint",
                "/lib/systemd/system/agentshimd.service",
                "/usr/share/agentshim/bpf/memevents.bpf.c",
                "/usr/share/man/man1/agentshim.1.gz", "/usr/share/man/man8/agentshimd.8.gz",
                "/usr/share/man/man8/agentshim-runtime.8.gz",
                "/usr/share/doc/agentshim/copyright", "/usr/share/doc/agentshim/README.md"}
    expected |= {f"/usr/share/containers/oci/hooks.d/{p.name.removesuffix('.in')}"
                 for p in (REPO / "hooks").glob("*.json.in")}
    profiles = {f"/etc/agentshim/profiles/{p.name}"
                for p in (REPO / "packaging" / "profiles").glob("*.yaml")}
    expected |= profiles
    expected |= {f"/usr/share/agentshim/{f}" for f in python_sources()}
    assert expected <= files, f"missing from the .deb: {sorted(expected - files)}"
    assert not [f for f in files if f.endswith(".pyc") or "__pycache__" in f]

    conffiles = run("sh", "-c", f"dpkg-deb --ctrl-tarfile {deb} | tar -xO ./conffiles").stdout
    assert set(conffiles.split()) == profiles

    # hooks point at the packaged command, launchers run the system python3 isolated
    for p in (REPO / "hooks").glob("*.json.in"):
        hook = json.loads((deb_tree / HOOKS_D.relative_to("/") / p.name.removesuffix(".in"))
                          .read_text())
        want = json.loads(p.read_text().replace("@AGENTSHIM@", "/usr/bin/agentshim"))
        assert hook == want
        assert hook["hook"]["path"] in files, f"{p.name}: {hook['hook']['path']} not packaged"
    launchers = sorted(f for f in files if f.startswith(("/usr/bin/", "/usr/sbin/")))
    assert launchers, files
    for exe in launchers:
        assert (deb_tree / exe[1:]).read_text().splitlines()[0] == "#!/usr/bin/python3 -I", exe
    wrapper = deb_tree / "usr/libexec/agentshim/agentshim-bash"
    assert "INTERP" not in run("readelf", "-l", str(wrapper)).stdout, "wrapper not static"


def test_rpm_files_requires_and_version(rpm: Path, deb: Path) -> None:
    q = run("rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{ARCH}", str(rpm)).stdout.split()
    assert q == ["agentshim", pkg_version(), platform.machine()]
    requires = [re.sub(r" >= \S+$", "", r)
                for r in run("rpm", "-qp", "--requires", str(rpm)).stdout.splitlines()]
    assert "python3 >= 3.11" in run("rpm", "-qp", "--requires", str(rpm)).stdout
    assert all(r in requires for r in REQUIRES), requires
    assert "python3-matplotlib" in run("rpm", "-qp", "--recommends", str(rpm)).stdout

    listed = run("rpm", "-qlp", str(rpm)).stdout.split()
    unpacked = Path(run("mktemp", "-d").stdout.strip())
    try:
        run("sh", "-c", f"rpm2cpio {rpm} | cpio -idm --quiet", cwd=unpacked)
        rpm_files = {"/" + str(p.relative_to(unpacked)) for p in unpacked.rglob("*")
                     if p.is_file() or p.is_symlink()}
    finally:
        shutil.rmtree(unpacked)
    assert rpm_files <= set(listed)
    # the same contents as the .deb, in Fedora's places, without Debian's doc files
    deb_side = {f.replace("/lib/systemd/system/", "/usr/lib/systemd/system/")
                for f in deb_files(deb)} - {"/usr/share/doc/agentshim/copyright",
                                             "/usr/share/doc/agentshim/changelog.Debian.gz"}
    assert rpm_files == deb_side, (sorted(rpm_files - deb_side), sorted(deb_side - rpm_files))
    configs = run("rpm", "-qcp", str(rpm)).stdout.split()
    assert configs == sorted(f"/etc/agentshim/profiles/{p.name}"
                             for p in (REPO / "packaging" / "profiles").glob("*.yaml"))
    scripts = run("rpm", "-qp", "--scripts", str(rpm)).stdout
    assert "agentshim-maint installed" in scripts and "agentshim-maint removing" in scripts


def test_man_pages_render_and_list_every_command(deb_tree: Path) -> None:
    need("groff")
    pages = sorted((deb_tree / "usr/share/man").rglob("*.gz"))
    assert [p.name for p in pages] == ["agentshim.1.gz", "agentshim-runtime.8.gz",
                                      "agentshimd.8.gz"]
    for page in pages:
        r = run("sh", "-c", f"zcat {page} | groff -man -Tutf8 -ww -z")
        assert r.stderr == "", f"{page.name}: {r.stderr}"
    text = run("zcat", str(pages[0])).stdout.replace("\\-", "-")

    def leaves(group, path):  # every command of the click tree
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from leaves(cmd, [*path, name])
            else:
                yield " ".join([*path, name])

    missing = [c for c in leaves(cli_main, ["agentshim"]) if f'.SS "{c} ' not in text]
    assert not missing, f"agentshim(1) lacks {missing}"


def test_unit_hardening_keeps_what_the_daemon_needs() -> None:
    unit = (REPO / "packaging/systemd/agentshimd.service").read_text()
    keys: dict[str, str] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys[k] = v
    assert keys["ExecStart"] == "/usr/sbin/agentshimd" and keys["Restart"] == "on-failure"
    caps = set(keys["CapabilityBoundingSet"].split())
    assert {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_KILL"} <= caps
    assert keys["ProtectSystem"] == "strict"
    # what would break it: a read-only cgroupfs or /lib/modules hidden from BCC
    for off in ("ProtectControlGroups", "ProtectKernelModules", "MemoryDenyWriteExecute",
                "ProtectProc"):
        assert keys.get(off, "no") == "no", off
    assert keys["RuntimeDirectory"] == "agentshim" and keys["StateDirectory"] == "agentshim"
    assert keys["RuntimeDirectoryPreserve"] == "yes"  # slots are bind-mounted into containers
    if shutil.which("systemd-analyze"):
        r = run("systemd-analyze", "security", "--offline=yes",
                str(REPO / "packaging/systemd/agentshimd.service"))
        level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)[1])
        print(f"systemd-analyze security: exposure {level}")
        assert level < 4.0, r.stdout


# --- installed for real ---------------------------------------------------------------------

def our_daemons() -> list[int]:
    """Running agentshimd processes of the package: /usr/sbin/agentshimd, or started by the
    packaged hook (`python3 -m agentshim.daemon` with PYTHONPATH=/usr/share/agentshim)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            environ = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"/usr/sbin/agentshimd" in argv or (
                b"agentshim.daemon" in argv and b"PYTHONPATH=/usr/share/agentshim" in environ):
            pids.append(int(d.name))
    return pids


def bpf_programs() -> dict[int, dict]:
    """Our BPF programs loaded in the kernel (bpftool prog list), by id."""
    progs = json.loads(run("bpftool", "prog", "list", "-j").stdout or "[]")
    return {p["id"]: p for p in progs if str(p.get("name", "")).startswith(BPF_PREFIX)}


def holders(prog: dict) -> set[int]:
    return {h.get("pid") for h in prog.get("pids", [])}


def daemon_pid() -> int:
    return int((RUN / "agentshimd.lock").read_text().strip())


def bpf_of_daemon() -> tuple[str, list[int]]:
    """The daemon's BPF state once its background compile is over, and its program ids."""
    deadline = time.monotonic() + 90
    while True:
        enf = request(RUN / "agentshimd.sock", {"op": "status"})["enforcer"]
        if enf["bpf"] != "loading" or time.monotonic() > deadline:
            return enf["bpf"], enf["bpf_program_ids"]
        time.sleep(0.2)


#: capability numbers (linux/capability.h) of the ones the unit may name
CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
               "CAP_KILL": 5, "CAP_IPC_LOCK": 14, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21,
               "CAP_SYS_RESOURCE": 24, "CAP_SYSLOG": 34, "CAP_PERFMON": 38, "CAP_BPF": 39}


def cap_mask(status: str, field: str) -> int:
    return int(re.search(rf"^{field}:\s*(\w+)", status, re.M)[1], 16)


def alive(pid: int) -> bool:
    """The process runs (a zombie waiting to be reaped does not)."""
    try:
        return not re.search(r"^State:\s*Z", Path(f"/proc/{pid}/status").read_text(), re.M)
    except FileNotFoundError:
        return False


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def daemon_answers() -> bool:
    try:
        request(RUN / "agentshimd.sock", {"op": "status"}, timeout_s=1.0)
        return True
    except DaemonUnavailable:
        return False


class Aside:
    """Moves what exists at the package's paths out of the way and puts it back."""

    def __init__(self, paths: list[Path], store: Path) -> None:
        self.store = store
        self.moved: list[Path] = []
        for p in paths:
            if p.exists() or p.is_symlink():
                dest = store / p.relative_to("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(p), str(dest))
                self.moved.append(p)
        if self.moved:
            print(f"moved aside until the end of the test: {[str(p) for p in self.moved]}")

    def restore(self) -> None:
        for p in self.moved:
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            shutil.move(str(self.store / p.relative_to("/")), str(p))


def managed_container(name: str) -> tuple[str, int]:
    r = run("podman", "run", "-d", "--name", name, "--annotation", "io.agentshim.enable=true",
            IMAGE, "sleep", "600", cwd=REPO, check=False)
    assert r.returncode == 0, f"podman run: {r.stderr}"
    cid = r.stdout.strip()
    pid = int(run("podman", "inspect", name, "--format", "{{.State.Pid}}").stdout)
    return cid, pid


def tool_call_lands_in_its_cgroup(name: str, cid: str) -> None:
    """`bash -c` in the container runs in tools/call-1; its record is in the state dir."""
    r = run("podman", "exec", name, "bash", "-c", "cat /proc/self/cgroup")
    mem = [line.split(":", 2)[2] for line in r.stdout.splitlines()
           if line.split(":", 2)[1] in ("memory", "")]
    assert mem and mem[0].endswith("/tools/call-1"), f"{r.stdout}\n{r.stderr}"
    records = STATE / "calls" / f"{cid}.jsonl"
    wait_for(records.exists, 5, str(records))
    rec = json.loads(records.read_text().splitlines()[0])
    assert rec["call"] == 1 and rec["exit"] == 0, rec


@pytest.fixture
def host_for_package(tmp_path) -> Iterator[dict]:
    """This host, ready to install the package: nothing else serving its paths; what was at
    them is moved aside and restored at the end. Yields a dict the test fills with what must be
    gone after the purge."""
    if os.geteuid() != 0:
        pytest.skip("installs a package: needs root")
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd is PID 1 here: the package would start agentshimd.service; this "
                    "test covers hosts without systemd (the hook-started daemon)")
    need("dpkg", "podman", "setpriv")
    if run("dpkg-query", "-W", "-f=${Status}", "agentshim", check=False).stdout.startswith(
            "install ok"):
        pytest.fail("the agentshim package is installed already: dpkg --purge agentshim first")
    if daemon_answers():
        pytest.skip("an agentshimd not started by this test serves /run/agentshim; the package "
                    "test would take it over")
    if list((RUN / "slots").glob("*")) or list((STATE / "hooks").glob("*.json")):
        pytest.skip("containers managed through /run/agentshim are running")
    overriding = list(Path("/etc/containers/oci/hooks.d").glob("agentshim-*.json"))
    if overriding:
        pytest.skip(f"{overriding} would override the package's hooks of the same name")
    run(str(REPO / "tests/images/build-test-image.sh"))
    paths = [STATE, RUN, LIB, Path("/usr/libexec/agentshim"), Path("/etc/agentshim"),
             Path("/usr/bin/agentshim"), Path("/usr/bin/agentshim-runtime"),
             Path("/usr/sbin/agentshimd"), *HOOKS_D.glob("agentshim-*.json")]
    aside = Aside(paths, tmp_path / "aside")
    gone: dict = {"containers": [], "cgroups": [], "daemons": set(), "bpf_ids": []}
    try:
        yield gone
    finally:
        for name in gone["containers"]:
            run("podman", "rm", "-f", "-t", "0", name, check=False)
        if run("dpkg-query", "-W", "-f=${Status}", "agentshim",
               check=False).stdout.startswith("install"):
            run("dpkg", "--purge", "agentshim", check=False)
        for pid in our_daemons():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for d in (STATE, RUN):
            shutil.rmtree(d, ignore_errors=True)
        aside.restore()


def test_deb_install_run_container_purge(deb: Path, host_for_package: dict) -> None:
    gone = host_for_package
    files = deb_files(deb)
    r = run("dpkg", "-i", str(deb), env=clean_env() | {"DEBIAN_FRONTEND": "noninteractive"})
    assert "the prestart hook starts agentshimd" in r.stdout + r.stderr
    assert run("dpkg-query", "-W", "-f=${Version}", "agentshim").stdout == pkg_version()
    missing = [f for f in files if not os.path.lexists(f)]
    assert not missing, f"installed files missing: {missing}"
    assert Path("/etc/systemd/system/multi-user.target.wants/agentshimd.service").is_symlink()
    if shutil.which("systemd-analyze"):
        assert run("systemd-analyze", "verify", f"/lib/systemd/system/{UNIT}",
                   check=False).stderr == ""
    # the packaged code imports with the system python3 even from this checkout's directory,
    # and the checkout's venv keeps importing the checkout from anywhere
    probe = ("import runpy, sys\nsys.argv = ['agentshim', '--version']\ntry:\n"
             "    runpy.run_path('/usr/bin/agentshim', run_name='__main__')\n"
             "except SystemExit:\n    pass\nprint(sys.modules['agentshim'].__file__)\n")
    out = run("/usr/bin/python3", "-I", "-c", probe, cwd=REPO).stdout.splitlines()
    assert out == [f"agentshim, version {agentshim.__version__}",
                   str(LIB / "agentshim/__init__.py")]
    venv_python = REPO / ".venv/bin/python"
    if venv_python.exists():
        where = run(str(venv_python), "-c", "import agentshim; print(agentshim.__file__)",
                    cwd="/").stdout.strip()
        assert where == str(REPO / "agentshim/__init__.py")
    assert run("/usr/bin/agentshim", "policy", "validate",
               "/etc/agentshim/profiles/default.yaml", cwd="/").returncode == 0
    # the runtime shim's launcher: passes --version through to the real runtime
    assert "version" in run("/usr/bin/agentshim-runtime", "--version", cwd="/").stdout
    doctor = json.loads(run("/usr/bin/agentshim", "doctor", "--json", check=False).stdout)
    checks = {c["name"]: c["status"] for c in doctor["checks"]}
    assert checks["oci-hooks"] == "ok" and checks["bcc"] == "ok", checks

    # 1. no daemon yet: the packaged prestart hook starts one
    name = f"ashim-pkg-{uuid.uuid4().hex[:8]}"
    gone["containers"].append(name)
    cid, pid = managed_container(name)
    tool_call_lands_in_its_cgroup(name, cid)
    root = Cgroup.of_pid(detect_layout(), pid)
    assert root.name == "framework"
    gone["cgroups"] += [d.parent for d in root.dirs.values()]
    first = daemon_pid()
    gone["daemons"].add(first)
    argv = Path(f"/proc/{first}/cmdline").read_bytes().split(b"\0")
    environ = Path(f"/proc/{first}/environ").read_bytes().split(b"\0")
    assert argv[:3] == [b"/usr/bin/python3", b"-m", b"agentshim.daemon"], argv
    assert b"PYTHONPATH=/usr/share/agentshim" in environ and b"PYTHONSAFEPATH=1" in environ
    bpf1, ids1 = bpf_of_daemon()
    gone["bpf_ids"] += ids1
    print(f"hook-started agentshimd {first}: BPF {bpf1}, programs {ids1}")
    run("podman", "rm", "-f", "-t", "0", name)

    # 2. upgrade in place (the same .deb again): the daemon is stopped before the files change
    #    and started again after, now as /usr/sbin/agentshimd
    r = run("dpkg", "-i", str(deb), env=clean_env() | {"DEBIAN_FRONTEND": "noninteractive"})
    out = r.stdout + r.stderr
    assert f"stopping agentshimd (pid {first}" in out and "started agentshimd" in out, out
    assert not alive(first)
    wait_for(daemon_answers, 30, "agentshimd restarted after the upgrade")
    restarted = daemon_pid()
    gone["daemons"].add(restarted)
    assert b"/usr/sbin/agentshimd" in Path(f"/proc/{restarted}/cmdline").read_bytes()
    os.kill(restarted, signal.SIGTERM)
    wait_for(lambda: not alive(restarted), 15, f"agentshimd {restarted} to stop")

    # 3. agentshimd as the unit starts it, with the unit's capability bounding set (systemd is
    #    not PID 1 here: setpriv applies CapabilityBoundingSet and NoNewPrivileges)
    unit = Path(f"/lib/systemd/system/{UNIT}").read_text()
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M)[1].split()
    bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    with open(STATE / "agentshimd.log", "ab") as log:  # setsid -f: not our child, as in life
        subprocess.run(["setsid", "-f", "setpriv", f"--bounding-set={bounding}",
                        "--no-new-privs", "/usr/sbin/agentshimd"], stdin=subprocess.DEVNULL,
                       stdout=log, stderr=log, cwd="/", env=clean_env(), check=True)
    wait_for(daemon_answers, 30, "agentshimd under the unit's capabilities")
    second = daemon_pid()
    gone["daemons"].add(second)
    want = sum(1 << CAP_NUMBERS[c] for c in caps)
    own = cap_mask(Path("/proc/self/status").read_text(), "CapBnd")
    assert cap_mask(Path(f"/proc/{second}/status").read_text(), "CapEff") == want & own
    name = f"ashim-pkg-{uuid.uuid4().hex[:8]}"
    gone["containers"].append(name)
    cid, pid = managed_container(name)
    tool_call_lands_in_its_cgroup(name, cid)
    gone["cgroups"] += [d.parent for d in Cgroup.of_pid(detect_layout(), pid).dirs.values()]
    bpf2, ids2 = bpf_of_daemon()
    gone["bpf_ids"] += ids2
    print(f"agentshimd {second} with the unit's capabilities: BPF {bpf2}, programs {ids2}")
    # the unit's capabilities are enough for whatever the uncapped daemon managed
    assert bpf2 == bpf1 if bpf1 != "loaded" else bpf2 == "loaded"
    if ids2 and shutil.which("bpftool"):
        progs = bpf_programs()
        assert set(ids2) <= set(progs), (ids2, sorted(progs))
        assert all(second in holders(progs[i]) for i in ids2 if progs[i].get("pids"))
    run("podman", "rm", "-f", "-t", "0", name)

    # 4. purge with that daemon running: prerm stops it, postrm removes the state
    r = run("dpkg", "--purge", "agentshim")
    print(r.stdout + r.stderr)
    left = [f for f in files if os.path.lexists(f)]
    assert not left, f"files left after purge: {left}"
    for p in (STATE, RUN, LIB, Path("/usr/libexec/agentshim"), Path("/etc/agentshim"),
              Path(f"/lib/systemd/system/{UNIT}"),
              Path(f"/etc/systemd/system/multi-user.target.wants/{UNIT}"),
              Path(f"/var/lib/systemd/deb-systemd-helper-enabled/{UNIT}.dsh-also")):
        assert not os.path.lexists(p), f"{p} left after purge"
    assert not list(HOOKS_D.glob("agentshim-*")) if HOOKS_D.exists() else True
    assert not [pid for pid in gone["daemons"] if alive(pid)]
    assert our_daemons() == []
    assert not [str(d) for d in gone["cgroups"] if d.exists()], "cgroups left after purge"
    if shutil.which("bpftool"):
        progs = bpf_programs()
        left = [progs[i]["name"] for i in gone["bpf_ids"] if i in progs]
        left += [p["name"] for p in progs.values() if holders(p) & gone["daemons"]]
        assert not left, f"BPF programs of ours left: {left}"
