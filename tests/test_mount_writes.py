"""ArtifactFS writes on a real FUSE mount against a real artifactd: the copy-on-write
overlay, its survival of a killed mount, git inside the mount, ``artifact-fs commit`` with
its compare-and-swap, following the remote branch, and the write path's bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import Server
from tests.test_mount import (  # noqa: F401 - fixtures
    auth_remote,
    fs,
    fs_env,
    git,
    make_repo,
    root,
    stop_daemon,
)

pytestmark = pytest.mark.skipif(
    not (os.access("/dev/fuse", os.R_OK | os.W_OK)), reason="needs /dev/fuse and fusermount3 (apt-get install fuse3)")
pytest.importorskip("pyfuse3")

FILES = {"README.md": b"# starter\n", "src/app.py": b"print('hi')\n", "src/old.py": b"OLD = 1\n",
         "docs/guide.md": b"guide\n"}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout:.0f} s"
        time.sleep(0.05)


def daemon(env: dict[str, str], root: Path, name: str, *options: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["artifact-fs", "daemon", "--root", str(root), *options], env=env)
    (root / "daemon.pid").write_text(str(proc.pid))
    wait_for(lambda: os.path.ismount(root / name) or proc.poll() is not None, "mounted")
    assert proc.poll() is None, "the daemon exited before mounting"
    return proc


def mounted_repo(server: Server, name: str, tmp_path: Path, root: Path, env: dict[str, str],
                 *options: str) -> tuple[str, str, subprocess.Popen[bytes]]:
    remote, token = make_repo(server, name, tmp_path, FILES)
    added = fs(env, "add-repo", "--name", name, "--remote", auth_remote(remote, token), "--branch", "main",
               "--mount-root", str(root))
    assert added.returncode == 0, added.stderr
    return remote, token, daemon(env, root, name, *options)


def write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def change_files(mount: Path) -> None:
    write_synced(mount / "README.md", b"# starter\nchanged in the mount\n")
    (mount / "notes").mkdir()
    write_synced(mount / "notes" / "new.txt", b"a new file\n")
    (mount / "src" / "old.py").unlink()
    os.rename(mount / "docs" / "guide.md", mount / "docs" / "howto.md")
    os.symlink("../README.md", mount / "docs" / "readme-link")


def expect_changed(mount: Path) -> None:
    assert (mount / "README.md").read_bytes() == b"# starter\nchanged in the mount\n"
    assert (mount / "notes" / "new.txt").read_bytes() == b"a new file\n"
    assert not (mount / "src" / "old.py").exists()
    assert sorted(os.listdir(mount / "docs")) == ["howto.md", "readme-link"]
    assert (mount / "docs" / "howto.md").read_bytes() == b"guide\n"
    assert os.readlink(mount / "docs" / "readme-link") == "../README.md"
    assert (mount / "src" / "app.py").read_bytes() == FILES["src/app.py"]


def mount_pid(root: Path, name: str) -> int:
    return int((root / ".artifact-fs" / "run" / f"{name}.pid").read_text())


def test_writes_live_in_the_overlay_git_sees_them_and_they_survive_kill_9(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    _, _, first = mounted_repo(sqlite_server, unique_name, tmp_path, root, fs_env, "--poll-interval", "0")
    mount = root / unique_name
    change_files(mount)
    expect_changed(mount)
    status = git("-C", str(mount), "status", "--porcelain")
    assert sorted(status.splitlines()) == [" D docs/guide.md", " D src/old.py", " M README.md",
                                           "?? docs/howto.md", "?? docs/readme-link", "?? notes/"], status
    assert "+changed in the mount" in git("-C", str(mount), "diff", "README.md")
    # A crash: the mount process dies at once (no cleanup), then its daemon.
    os.kill(mount_pid(root, unique_name), signal.SIGKILL)
    first.kill()
    first.wait()
    second = daemon(fs_env, root, unique_name, "--poll-interval", "0")
    expect_changed(mount)
    assert sorted(git("-C", str(mount), "status", "--porcelain").splitlines()) == sorted(status.splitlines())
    stop_daemon(second, root, unique_name)
