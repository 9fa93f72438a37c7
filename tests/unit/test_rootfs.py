"""agentshim.rootfs on fixture rootfs trees: resolution never leaves the rootfs, never opens a
non-regular file, and the store holds root-owned copies."""

from __future__ import annotations

import errno
import os

import pytest

from agentshim import rootfs


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "r"
    (r / "usr" / "bin").mkdir(parents=True)
    (r / "usr" / "bin" / "bash").write_text("image bash")
    return r


def resolve(root, path):
    fd = rootfs.open_rootfs(root)
    try:
        found = rootfs.resolve(fd, path)
        os.close(found.fd)
        return found
    finally:
        os.close(fd)


def test_links_are_followed_inside_the_rootfs(root):
    (root / "bin").symlink_to("/usr/bin")  # absolute: inside the rootfs, not the host's
    (root / "usr" / "bin" / "sh").symlink_to("../../bin/bash")
    assert resolve(root, "/bin/bash").path == "/usr/bin/bash"
    found = resolve(root, "/usr/bin/sh")
    assert found.path == "/usr/bin/bash"
    assert "/usr/bin/sh" in found.visited and "/bin" in found.visited


def test_dotdot_stops_at_the_root(root):
    (root / "usr" / "bin" / "up").symlink_to("../../../../../../usr/bin/bash")
    assert resolve(root, "/usr/bin/up").path == "/usr/bin/bash"


def test_a_link_to_a_host_file_resolves_in_the_rootfs_or_not_at_all(root, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    (root / "evil").symlink_to(str(secret))  # the same path inside the rootfs does not exist
    with pytest.raises(rootfs.RootfsError) as e:
        resolve(root, "/evil")
    assert e.value.errno == errno.ENOENT


@pytest.mark.parametrize("make,err", [
    (lambda r: (r / "loop").symlink_to("loop"), errno.ELOOP),
    (lambda r: os.mkfifo(r / "loop"), errno.EINVAL),
    (lambda r: (r / "loop").mkdir(), errno.EISDIR),
    (lambda r: (r / "loop").symlink_to("/proc/self/root/etc/passwd"), errno.ENOENT),
])
def test_loops_fifos_directories_and_proc_are_refused(root, make, err):
    make(root)
    with pytest.raises(rootfs.RootfsError) as e:
        resolve(root, "/loop")
    assert e.value.errno == err


def test_a_name_too_long_is_an_error_not_a_crash(root):
    (root / "long").symlink_to("x" * 300)
    with pytest.raises(rootfs.RootfsError) as e:
        resolve(root, "/long")
    assert e.value.errno == errno.ENAMETOOLONG


def test_copy_to_store_is_content_addressed_and_bounded(root, tmp_path):
    fd = os.open(root / "usr" / "bin" / "bash", os.O_RDONLY)
    try:
        dest = rootfs.copy_to_store(fd, tmp_path / "store")
        assert dest.read_text() == "image bash" and dest.stat().st_mode & 0o777 == 0o755
        os.lseek(fd, 0, os.SEEK_SET)
        assert rootfs.copy_to_store(fd, tmp_path / "store") == dest
        os.lseek(fd, 0, os.SEEK_SET)
        with pytest.raises(rootfs.RootfsError):
            rootfs.copy_to_store(fd, tmp_path / "store", max_bytes=3)
    finally:
        os.close(fd)


def test_covered_by_names_the_mount_over_a_path():
    assert rootfs.covered_by(["/usr/bin/bash", "/data/bash"], ["/data"]) == "/data"
    assert rootfs.covered_by(["/database/bash"], ["/data"]) is None
    assert rootfs.covered_by(["/data"], ["/data/"]) == "/data/"
