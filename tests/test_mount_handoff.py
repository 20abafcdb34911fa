"""``add-repo``'s client for a running daemon (``fs/handoff.py``): the guide's plain form is
parsed without click; everything else goes to the click command, which says what is wrong.
The hand-off itself, through a real daemon and mount, is in test_mount_rootfirst.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifactd.fs import daemonctl, handoff
from artifactd.fs.state import RootState


def test_the_guide_form_is_read_without_click() -> None:
    argv = ["--name", "starter-repo", "--remote", "https://x:t@h/r.git", "--branch", "main", "--mount-root", "/tmp"]
    assert handoff.parse(argv) == {"name": "starter-repo", "remote": "https://x:t@h/r.git", "branch": "main",
                                   "mount_root": "/tmp"}
    assert handoff.parse(["--name=a", "--remote=u", "--mount-root=/tmp", "--credential-ttl=60"]) == \
        {"name": "a", "remote": "u", "mount_root": "/tmp", "credential_ttl": "60"}


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["--name", "a", "--remote", "u", "--mount-root", "/tmp", "-h"],
    ["--name", "a", "--remote", "u"],  # --mount-root missing: click says so
    ["--name", "a", "--name", "b", "--remote", "u", "--mount-root", "/tmp"],
    ["--name", "a", "--remote", "u", "--mount-root", "/tmp", "--branch", "-x"],
    ["--name", "a", "--remote", "u", "--mount-root", "/tmp", "--branch"],
    ["--name", "a", "--remote", "u", "--mount-root", "/tmp", "--credential-ttl", "0"],
    ["--name", "a", "--remote", "u", "--mount-root", "/tmp", "--credential-ttl", "soon"],
    ["--name", "a", "--remote", "u", "--mount-root", "/tmp", "extra"],
])
def test_anything_else_goes_to_the_click_command(argv: list[str]) -> None:
    assert handoff.parse(argv) is None


def test_bad_input_and_no_daemon_go_to_the_click_command(tmp_path: Path) -> None:
    base = ["--remote", "http://127.0.0.1:9/r.git", "--mount-root", str(tmp_path)]
    assert handoff.run(["--name", "../x", *base]) is None  # click's command gives the error
    assert handoff.run(["--name", "ok", *base]) is None  # no daemon: the clone by the click command


def test_the_socket_is_the_daemons(tmp_path: Path) -> None:
    assert daemonctl.socket_at(tmp_path) == daemonctl.socket_path(RootState(tmp_path))
