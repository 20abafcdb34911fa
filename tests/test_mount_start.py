"""How a mount starts, on real mounts against a real server: ``add-repo`` handed to a
running daemon (one interpreter: the daemon's), ``artifactd mount`` forking its mount
process (no second Python, no credentials in its command line), and the bulk size load
that paces itself behind reads (fs/activity.py)."""

# ruff: noqa: F811 - the mount fixtures (root, fs_env) are test_mount's, imported by name

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from artifactd.fs import activity, objectinfo
from artifactd.fs.activity import ReadActivity
from artifactd.fs.tree import list_tree
from artifactd.fs.wire import Remote
from tests.harness import Server
from tests.test_mount import (  # noqa: F401 - fixtures
    FILES,
    auth_remote,
    fs,
    fs_env,
    make_repo,
    pytestmark,
    root,
    start_daemon,
)


def _no_secret_in_files_or_ps(root: Path, token: str, mounts: list[Path]) -> None:
    secret = token.split("?expires=")[0]
    for path in root.rglob("*"):
        if path.is_file() and not any(path.is_relative_to(m) for m in mounts):
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_add_repo_is_handed_to_a_running_daemon_which_mounts_it_at_once(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    first_remote, first_token = make_repo(sqlite_server, f"{unique_name}-a", tmp_path, {"a.txt": b"a\n"})
    added = fs(fs_env, "add-repo", "--name", "first", "--remote", auth_remote(first_remote, first_token),
               "--mount-root", str(root))
    assert added.returncode == 0, added.stderr
    daemon = start_daemon(fs_env, root, "first")
    try:
        remote, token = make_repo(sqlite_server, f"{unique_name}-b", tmp_path, FILES)
        result = fs(fs_env, "add-repo", "--name", "second", "--remote", auth_remote(remote, token),
                    "--branch", "main", "--mount-root", str(root))
        assert result.returncode == 0, result.stderr
        assert "mounted by the running daemon" in result.stdout
        second = root / "second"
        assert os.path.ismount(second)  # when add-repo returns: no second `daemon` needed
        assert sorted(os.listdir(second)) == [".git", "README.md", "bin", "data", "src"]
        assert (second / "src" / "app.py").stat().st_size == len(FILES["src/app.py"])
        assert (second / "README.md").read_bytes() == FILES["README.md"]
        assert daemon.poll() is None
        _no_secret_in_files_or_ps(root, token, [root / "first", second])
        # A bad request to the daemon: one line, nothing mounted, the daemon stays up.
        bad = fs(fs_env, "add-repo", "--name", "third", "--remote", auth_remote(remote, token),
                 "--branch", "no-such-branch", "--mount-root", str(root))
        assert bad.returncode == 1 and "does not exist on" in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
        assert not (root / "third").exists() and daemon.poll() is None
        # A bad name: the lean client leaves the checks to the daemon, which gives inputs' words.
        bad = fs(fs_env, "add-repo", "--name", "x..y", "--remote", auth_remote(remote, token),
                 "--mount-root", str(root))
        assert bad.returncode == 1 and bad.stderr.startswith("artifact-fs: --name 'x..y' is not a valid repo name")
        assert len(bad.stderr.strip().splitlines()) == 1 and not (root / "x..y").exists()
        # Not a request of ours on the socket: an answer saying so, and the daemon stays up.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(root / ".artifact-fs" / "run" / "daemon.ctl"))
            client.sendall(b'{"op": "rm -rf"}\n')
            assert json.loads(client.makefile("rb").readline()) == {"ok": False, "error": "not an add-repo request"}
        assert daemon.poll() is None
        # Added again (a fresh token, say): the running mount stays as it is.
        again = fs(fs_env, "add-repo", "--name", "second", "--remote", auth_remote(remote, token),
                   "--mount-root", str(root))
        assert again.returncode == 0, again.stderr
        assert os.path.ismount(second)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    assert not os.path.ismount(root / "first") and not os.path.ismount(root / "second")
    assert not (root / ".artifact-fs" / "run" / "daemon.ctl").exists()
    # No daemon: add-repo records the repo again, and the mount waits for `daemon`.
    alone = fs(fs_env, "add-repo", "--name", "fourth", "--remote", auth_remote(remote, token),
               "--mount-root", str(root))
    assert alone.returncode == 0 and "running daemon" not in alone.stdout, alone.stderr
    assert not os.path.ismount(root / "fourth")


def test_oneshot_mount_is_forked_and_its_command_line_has_no_credentials(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path
) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, FILES)
    target = root / "work"
    result = subprocess.run([sys.executable, "-m", "artifactd", "mount", auth_remote(remote, token), str(target)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    try:
        pid = int((root / ".artifact-fs" / "run" / "work.pid").read_text())
        # Forked from `artifactd mount`, not a new `python -m ...mountproc`: it says what it is.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")
        assert cmdline == b"artifact-fs mount work", cmdline
        assert (target / "README.md").read_bytes() == FILES["README.md"]
        _no_secret_in_files_or_ps(root, token, [target])
    finally:
        subprocess.run([sys.executable, "-m", "artifactd", "unmount", str(target)], capture_output=True, timeout=120)
    assert not os.path.ismount(target)


def test_the_bulk_size_load_asks_in_small_requests_each_paced_behind_reads(
    sqlite_server: Server, unique_name: str, tmp_path: Path
) -> None:
    files = {f"f{i:02}.txt": b"x" * i for i in range(7)}
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, files)
    oids = sorted({e.oid for e in list_tree(tmp_path / f"src-{unique_name}" / ".git", "HEAD") if e.kind == "blob"})
    reads = ReadActivity()
    paced: list[bool] = []

    def pace() -> None:  # what the mount passes: wait until no read is on the wire
        paced.append(reads.busy())
        reads.wait_quiet()

    bulk = Remote(remote, ("x", token.split("?expires=")[0]), 30)
    try:
        found = objectinfo.sizes(bulk, oids, 2, pace)
    finally:
        bulk.close()
    assert set(found) == set(oids)
    assert sorted(found.values()) == sorted(len(d) for d in files.values())
    assert len(paced) == (len(oids) + 1) // 2  # before every request, one request per 2 sizes
    # A read on the wire holds the next bulk request back until it ends.
    reads.begin()
    assert reads.busy()
    reads.end()
    assert reads.busy()  # QUIET after it, too: the next read of a reader comes right after
    reads.last = time.monotonic() - activity.QUIET - 1
    assert not reads.busy()
