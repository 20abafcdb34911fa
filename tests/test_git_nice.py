"""Every git the server starts runs ``git_nice`` nicer than the server (issue 12: the
event loop gets the CPU first while pushes and clones keep the machine busy)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from artifactd.config import Settings, load_settings
from artifactd.errors import ConfigError
from tests.gitutil import Git, bearer, create_repo, pkt, wait_no_processes
from tests.harness import Server

DEFAULT_GIT_NICE = Settings().git_nice


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces):
    [0] is the state, [1] the parent pid, [16] the niceness."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _running_git(git_dir: Path, service: str, seconds: float = 10) -> int:
    """The pid of a live ``git <service>`` working on ``git_dir``, waited for."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (Path(cmdline[0].decode()).name == "git" and service.encode() in cmdline
                    and str(git_dir).encode() in b" ".join(cmdline)):
                return int(proc.name)
        time.sleep(0.05)
    raise AssertionError(f"no git {service} started for {git_dir}")


def test_receive_pack_runs_at_git_nice(sqlite_server: Server, tmp_path: Path,
                                      unique_name: str) -> None:
    assert DEFAULT_GIT_NICE > 0
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    base = git.new_work(tmp_path / "w")
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "w")
    new = git.commit_files(tmp_path / "w", {"big.bin": os.urandom(1 << 20)}, "big")
    pack = subprocess.run(["git", "pack-objects", "--stdout", "--revs"], cwd=tmp_path / "w",
                          env=git.env, input=f"{new}\n^{base}\n".encode(), capture_output=True,
                          check=True).stdout
    # Half a push: receive-pack starts and waits for the rest.
    body = (pkt(f"{base} {new} refs/heads/main\0report-status\n") + b"0000"
            + pack)[: len(pack) // 2]
    parts = urlsplit(repo.remote)
    head = "\r\n".join([
        f"POST {parts.path}/git-receive-pack HTTP/1.1", f"Host: {parts.netloc}",
        f"Authorization: Bearer {repo.token}",
        "Content-Type: application/x-git-receive-pack-request",
        f"Content-Length: {len(body) * 2}", "", ""]).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + body)
        pid = _running_git(repo.git_dir, "receive-pack")
        fields = _stat(pid)
        parent_nice = int(_stat(int(fields[1]))[16])
        assert int(fields[16]) == min(19, parent_nice + DEFAULT_GIT_NICE)
    assert wait_no_processes(repo.git_dir) == []


@pytest.mark.parametrize("bad", ["-1", "20"])
def test_git_nice_out_of_range_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="git_nice"):
        load_settings(env={"ARTIFACTD_GIT_NICE": bad})
