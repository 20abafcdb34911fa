"""What reading a file costs a real mount, in FUSE requests by kind (the control socket's
status counts them): a cold read-all by ``find -exec cat`` costs each file one OPEN and one
RELEASE, no LOOKUP, GETATTR or READ (``readdirplus`` answers the listing with the
attributes, the open hands the bytes to the page cache), and pyfuse3's loop takes the
requests that are already waiting without a pass through trio's scheduler (``fuseloop.py``)."""

# ruff: noqa: F811 - the mount fixtures (root, fs_env) are test_mount's, imported by name

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path
from typing import Any

from artifactd.fs.state import RootState
from artifactd.fs.write import control
from tests.harness import Server
from tests.test_mount import (  # noqa: F401 - fixtures
    auth_remote,
    fs,
    fs_env,
    make_repo,
    pytestmark,
    root,
    start_daemon,
    stop_daemon,
)

FILES = {f"dir{i % 4}/file{i:03}.py": f"# file {i}\n".encode() + b"value = %d\n" % i * 20 for i in range(200)}


def requests(root: Path, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:  # the control socket opens just after the mount answers
        try:
            answer = control.ask(RootState(root).control_socket(name), {"op": "status"}, timeout=10)
            break
        except control.ControlError:
            assert time.monotonic() < deadline, "the mount's control socket never answered"
            time.sleep(0.02)
    assert answer["ok"], answer
    return dict(answer["requests"])


def released(root: Path, name: str, count: int) -> dict[str, Any]:
    """The counts once ``count`` files are released: the kernel sends RELEASE after close()."""
    deadline = time.monotonic() + 30
    while (found := requests(root, name))["release"] < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def digest(argv: list[str], cwd: Path) -> str:
    out = subprocess.run(["sh", "-c", " ".join(argv)], cwd=cwd, capture_output=True, check=True, timeout=120).stdout
    return hashlib.sha256(out).hexdigest()


def test_a_cold_read_all_costs_each_file_one_open_and_one_release(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, FILES)
    assert fs(fs_env, "add-repo", "--name", unique_name, "--remote", auth_remote(remote, token),
              "--branch", "main", "--mount-root", str(root)).returncode == 0
    daemon = start_daemon(fs_env, root, unique_name)
    mount = root / unique_name
    read_all = ["find", ".", "-name", ".git", "-prune", "-o", "-type", "f", "-print0",
                "|", "LC_ALL=C", "sort", "-z", "|", "xargs", "-0", "cat"]
    expected = hashlib.sha256(b"".join(FILES[path] for path in sorted(FILES))).hexdigest()
    before = requests(root, unique_name)
    assert digest(read_all, mount) == expected
    counts = released(root, unique_name, before["release"] + len(FILES))
    assert counts["open"] - before["open"] == len(FILES)
    assert counts["release"] - before["release"] == len(FILES)
    assert counts["lookup"] == before["lookup"]  # the listing's readdirplus answered them
    assert counts["getattr"] - before["getattr"] <= 4  # the directories', not the files'
    assert counts["read"] == before["read"]  # the bytes went to the page cache with the open
    assert counts["taken_without_a_scheduler_pass"] > before["taken_without_a_scheduler_pass"]
    # Eight readers at once (several of pyfuse3's tasks on the read gate): the same bytes.
    parallel = ["find", ".", "-name", ".git", "-prune", "-o", "-type", "f", "-print0",
                "|", "xargs", "-0", "-P", "8", "-n", "5", "sha256sum", "|", "sort"]
    lines = subprocess.run(["sh", "-c", " ".join(parallel)], cwd=mount, capture_output=True, text=True,
                           check=True, timeout=120).stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(hashlib.sha256(data).hexdigest()
                                                               for data in FILES.values())
    stop_daemon(daemon, root, unique_name)  # SIGTERM ends every task of the loop
