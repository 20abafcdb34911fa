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


def clone_of(remote: str, token: str, tmp_path: Path, label: str, branch: str = "main") -> Path:
    target = tmp_path / f"check-{label}"
    git("clone", "-q", "--branch", branch, auth_remote(remote, token), str(target))
    return target


def push_from_elsewhere(remote: str, token: str, tmp_path: Path, label: str, files: dict[str, bytes]) -> str:
    work = clone_of(remote, token, tmp_path, label)
    for path, data in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(data)
    git("add", "-A", cwd=work)
    git("-c", "user.name=o", "-c", "user.email=o@example.com", "commit", "-qm", f"elsewhere {label}", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def test_commit_pushes_the_overlay_with_compare_and_swap_and_clears_it(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token, proc = mounted_repo(sqlite_server, unique_name, tmp_path, root, fs_env, "--poll-interval", "0")
    mount = root / unique_name
    change_files(mount)
    os.chmod(mount / "src" / "app.py", 0o755)
    done = fs(fs_env, "commit", unique_name, "-m", "from the mount", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert "committed" in done.stdout and "to main" in done.stdout
    # The remote has exactly the mount's view.
    check = clone_of(remote, token, tmp_path, "after")
    assert (check / "README.md").read_bytes() == b"# starter\nchanged in the mount\n"
    assert (check / "notes" / "new.txt").read_bytes() == b"a new file\n"
    assert not (check / "src" / "old.py").exists() and not (check / "docs" / "guide.md").exists()
    assert (check / "docs" / "howto.md").read_bytes() == b"guide\n"
    assert os.readlink(check / "docs" / "readme-link") == "../README.md"
    assert os.access(check / "src" / "app.py", os.X_OK)
    assert git("log", "-1", "--format=%s", cwd=check).strip() == "from the mount"
    # The mount shows the new head with an empty overlay; git agrees.
    head = git("rev-parse", "HEAD", cwd=check).strip()
    assert git("-C", str(mount), "rev-parse", "HEAD").strip() == head
    assert git("-C", str(mount), "status", "--porcelain") == ""
    assert not list((root / ".artifact-fs" / "overlay" / unique_name / "data").iterdir())
    expect_changed(mount)
    assert f"head {head[:12]}\tclean" in fs(fs_env, "status", "--root", str(root)).stdout
    nothing = fs(fs_env, "commit", unique_name, "-m", "again", "--root", str(root))
    assert nothing.returncode == 0 and "nothing to commit" in nothing.stdout
    # The next commit builds on the new head.
    write_synced(mount / "notes" / "new.txt", b"second\n")
    assert fs(fs_env, "commit", unique_name, "-m", "second", "--root", str(root)).returncode == 0
    assert git("-C", str(mount), "log", "--format=%s", "-3").split("\n")[:3] == ["second", "from the mount",
                                                                                  "first files"]
    stop_daemon(proc, root, unique_name)


def test_a_moved_branch_sends_the_commit_to_a_side_branch_and_keeps_the_overlay(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token, proc = mounted_repo(sqlite_server, unique_name, tmp_path, root, fs_env, "--poll-interval", "0")
    mount = root / unique_name
    write_synced(mount / "README.md", b"mine\n")
    theirs = push_from_elsewhere(remote, token, tmp_path, "theirs", {"other.txt": b"theirs\n"})
    result = fs(fs_env, "commit", unique_name, "-m", "mine", "--root", str(root))
    assert result.returncode == 2, result.stderr
    assert "moved on the remote" in result.stdout and "side branch artifact-fs/main/" in result.stdout
    side = result.stdout.split("side branch ")[1].split(" ")[0]
    assert git("ls-remote", auth_remote(remote, token), "refs/heads/main").split()[0] == theirs
    check = clone_of(remote, token, tmp_path, "side", branch=side)
    assert (check / "README.md").read_bytes() == b"mine\n" and not (check / "other.txt").exists()
    assert (mount / "README.md").read_bytes() == b"mine\n"  # the overlay is kept
    status = fs(fs_env, "status", "--root", str(root)).stdout
    assert "1 changes" in status and f"behind the remote (now {theirs[:12]})" in status
    stop_daemon(proc, root, unique_name)


def test_a_clean_mount_follows_fast_forwards_and_a_dirty_one_reports_it_is_behind(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token, proc = mounted_repo(sqlite_server, unique_name, tmp_path, root, fs_env, "--poll-interval", "0.2")
    mount = root / unique_name
    assert (mount / "README.md").read_bytes() == FILES["README.md"]  # in the kernel's cache now
    assert os.stat(mount / "src" / "app.py").st_size == len(FILES["src/app.py"])
    new = push_from_elsewhere(remote, token, tmp_path, "ff", {"README.md": b"# moved on\n", "src/app.py": b"",
                                                              "added/file.txt": b"added\n"})
    wait_for(lambda: (mount / "README.md").read_bytes() == b"# moved on\n", "following the branch")
    assert os.stat(mount / "src" / "app.py").st_size == 0
    assert (mount / "added" / "file.txt").read_bytes() == b"added\n"
    assert git("-C", str(mount), "rev-parse", "HEAD").strip() == new
    assert git("-C", str(mount), "status", "--porcelain") == ""
    # Dirty: not followed, reported.
    write_synced(mount / "mine.txt", b"mine\n")
    newer = push_from_elsewhere(remote, token, tmp_path, "ff2", {"README.md": b"# again\n"})
    wait_for(lambda: f"behind the remote (now {newer[:12]})" in fs(fs_env, "status", "--root", str(root)).stdout,
             "reported behind")
    assert (mount / "README.md").read_bytes() == b"# moved on\n"
    stop_daemon(proc, root, unique_name)
