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
from typing import Any

import pytest

from artifactd.fs.write import control
from tests import test_mount
from tests.harness import Server
from tests.test_mount import auth_remote, fs, git, make_repo, stop_daemon

# The mount tests' fixtures: the artifact-fs command on PATH, and a mount root cleaned up
# (mounts, daemon, credential cache) after each test, even a failed one.
fs_env = test_mount.fs_env
root = test_mount.root

pytestmark = pytest.mark.skipif(
    not (os.access("/dev/fuse", os.R_OK | os.W_OK)), reason="needs /dev/fuse and fusermount3 (apt-get install fuse3)")
pytest.importorskip("pyfuse3")

FILES = {"README.md": b"# starter\n", "src/app.py": b"print('hi')\n", "src/old.py": b"OLD = 1\n",
         "docs/guide.md": b"guide\n"}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
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
    # An editor's save: a new file written and fsynced, renamed over the old one.
    write_synced(mount / ".README.md.swp", b"# starter\nchanged in the mount\n")
    os.rename(mount / ".README.md.swp", mount / "README.md")
    with open(mount / "src" / "app.py", "ab") as appended:
        appended.write(b"print('more')\n")
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
    assert (mount / "src" / "app.py").read_bytes() == FILES["src/app.py"] + b"print('more')\n"


def mount_status(root: Path, name: str) -> dict[str, Any]:
    """What ``artifact-fs status`` shows, straight from the mount's control socket (polled
    in loops without starting a Python process each time)."""
    return control.ask(root / ".artifact-fs" / "run" / f"{name}.ctl", {"op": "status"})


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
    assert sorted(status.splitlines()) == [" D docs/guide.md", " D src/old.py", " M README.md", " M src/app.py",
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
    line = fs(fs_env, "status", "--root", str(root)).stdout.splitlines()[0]
    assert "\tnot mounted\t" in line and line.endswith("\t1 uncommitted changes in the overlay"), line
    refused = fs(fs_env, "remove-repo", "--name", unique_name, "--root", str(root))
    assert refused.returncode == 1 and "has uncommitted changes" in refused.stderr
    assert (root / ".artifact-fs" / "overlay" / unique_name / "journal").stat().st_size > 0


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
    wait_for(lambda: mount_status(root, unique_name)["remote_head"] == newer, "seeing the remote move")
    assert f"behind the remote (now {newer[:12]})" in fs(fs_env, "status", "--root", str(root)).stdout
    assert (mount / "README.md").read_bytes() == b"# moved on\n"
    stop_daemon(proc, root, unique_name)


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_bad_input_on_the_write_path(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token, proc = mounted_repo(sqlite_server, unique_name, tmp_path, root, fs_env, "--poll-interval", "0")
    mount = root / unique_name
    # Symlinks out of the mount are refused (EPERM); inside it they are fine.
    for target in ("/etc/passwd", "../../outside", "../src/../../x", "a/../../.."):
        with pytest.raises(PermissionError):
            os.symlink(target, mount / "docs" / "escape")
    os.symlink("../src/app.py", mount / "docs" / "inside")
    assert (mount / "docs" / "inside").read_bytes() == FILES["src/app.py"]
    # The clone's pointer is not part of the tree; hard links and device files do not exist in git.
    with pytest.raises(OSError):
        (mount / ".git").write_text("gitdir: /elsewhere\n")
    with pytest.raises(PermissionError):
        os.link(mount / "README.md", mount / "hard")
    with pytest.raises(PermissionError):
        os.mkfifo(mount / "fifo")
    with pytest.raises(OSError):
        os.rmdir(mount / "src")  # not empty
    # A large file is streamed to the overlay, never held in the mount's memory.
    chunk = os.urandom(1 << 20)
    size = 192 << 20
    with open(mount / "large.bin", "wb") as out:
        for _ in range(size // len(chunk)):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    assert os.stat(mount / "large.bin").st_size == size
    with open(mount / "large.bin", "rb") as back:
        back.seek(size - len(chunk))
        assert back.read() == chunk
    assert peak_rss(mount_pid(root, unique_name)) < size // 2
    assert "?? large.bin" in git("-C", str(mount), "status", "--porcelain")
    # Truncated, then committed: above git's streaming threshold, pushed whole.
    os.truncate(mount / "large.bin", 24 << 20)
    done = fs(fs_env, "commit", unique_name, "-m", "a large file", "--root", str(root))
    assert done.returncode == 0, done.stderr
    check = clone_of(remote, token, tmp_path, "large")
    assert (check / "large.bin").read_bytes() == chunk * 24
    assert os.readlink(check / "docs" / "inside") == "../src/app.py"
    stop_daemon(proc, root, unique_name)


def test_the_server_going_away_keeps_the_overlay_and_refreshes_are_retried_visibly(
    tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    from tests.harness import start_server

    server = start_server(tmp_path / "data")
    try:
        _, _, proc = mounted_repo(server, "going", tmp_path, root, fs_env, "--poll-interval", "0.2")
        mount = root / "going"
        write_synced(mount / "README.md", b"kept\n")
    finally:  # the server goes away at once (SIGKILL), as in a crash
        assert server.process is not None
        server.process.kill()
        server.process.wait()
    # A commit fails clearly; the overlay is kept. Refreshes fail, visibly, and go on.
    failed = fs(fs_env, "commit", "going", "-m", "while away", "--root", str(root))
    assert failed.returncode == 1 and "cannot reach" in failed.stderr and "overlay is kept" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert (mount / "README.md").read_bytes() == b"kept\n"
    wait_for(lambda: mount_status(root, "going")["refresh_failures"] >= 2, "retrying the refresh")
    line = fs(fs_env, "status", "--root", str(root)).stdout
    assert "\t1 changes\t" in line and "refresh failed" in line and "retrying: " in line, line
    assert os.path.ismount(mount) and mount_status(root, "going")["changes"] == 1
    stop_daemon(proc, root, "going")


def test_a_revoked_token_fails_commit_and_refresh_clearly_until_add_repo_gives_a_new_one(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token, proc = mounted_repo(sqlite_server, unique_name, tmp_path, root, fs_env,
                                       "--poll-interval", "0.2")
    mount = root / unique_name
    write_synced(mount / "README.md", b"kept\n")
    with sqlite_server.client() as api:
        revoked = api.post(f"/repos/{unique_name}/tokens/revoke", json={"token": token}).json()
        assert revoked["success"], revoked
        fresh = api.post("/tokens", json={"repo": unique_name, "scope": "write", "ttl": 3600}).json()
        assert fresh["success"], fresh
    refused = fs(fs_env, "commit", unique_name, "-m", "revoked", "--root", str(root))
    assert refused.returncode == 1 and "refused the credentials" in refused.stderr, refused.stderr
    assert "add-repo" in refused.stderr and token.split("?")[0] not in refused.stderr
    wait_for(lambda: mount_status(root, unique_name)["refresh_failures"] >= 1, "a failed refresh")
    again = fs(fs_env, "add-repo", "--name", unique_name, "--remote",
               auth_remote(remote, fresh["result"]["plaintext"]), "--branch", "main", "--mount-root", str(root))
    assert again.returncode == 0, again.stderr
    # The refresh that failed is retried and now succeeds; the commit goes through.
    wait_for(lambda: mount_status(root, unique_name)["refresh_failures"] == 0, "a refresh with the new token")
    done = fs(fs_env, "commit", unique_name, "-m", "with a new token", "--root", str(root))
    assert done.returncode == 0, done.stderr
    check = clone_of(remote, fresh["result"]["plaintext"], tmp_path, "revoked")
    assert (check / "README.md").read_bytes() == b"kept\n"
    stop_daemon(proc, root, unique_name)


def test_autocommit_on_an_interval_and_on_unmount(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token, proc = mounted_repo(sqlite_server, unique_name, tmp_path, root, fs_env,
                                       "--poll-interval", "0", "--autocommit", "0.3")
    mount = root / unique_name
    first = git("ls-remote", auth_remote(remote, token), "refs/heads/main").split()[0]
    write_synced(mount / "auto.txt", b"on an interval\n")
    wait_for(lambda: git("ls-remote", auth_remote(remote, token), "refs/heads/main").split()[0] != first,
             "autocommitted")
    stop_daemon(proc, root, unique_name)
    proc = daemon(fs_env, root, unique_name, "--poll-interval", "0", "--autocommit", "unmount")
    write_synced(mount / "auto.txt", b"on unmount\n")
    stop_daemon(proc, root, unique_name)
    check = clone_of(remote, token, tmp_path, "auto")
    assert (check / "auto.txt").read_bytes() == b"on unmount\n"
    assert git("log", "--format=%s", "-2", cwd=check).split("\n")[:2] == [
        "artifact-fs autocommit on unmount", "artifact-fs autocommit"]
    bad = fs(fs_env, "daemon", "--root", str(root), "--autocommit", "sometimes")
    assert bad.returncode == 2 and "--autocommit" in bad.stderr
