"""``add-repo``'s client for a running daemon (``fs/handoff.py``): the guide's plain form is
parsed without click; everything else goes to the click command, which says what is wrong.
The hand-off itself, through a real daemon and mount, is in test_mount_rootfirst.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from artifactd.fs import daemonctl, handoff
from artifactd.fs.inputs import DEFAULT_CREDENTIAL_TTL
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


def test_no_daemon_records_without_click_and_bad_input_gets_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--remote", "http://127.0.0.1:9/r.git", "--mount-root", str(tmp_path)]
    assert handoff.run(["--name", "x", *base[:-1], str(tmp_path / "missing")]) is None  # click's words
    assert handoff.run(["--name", "../x", *base]) == 1
    assert capsys.readouterr().err.startswith("artifact-fs: --name '../x' is not a valid repo name")
    assert handoff.run(["--name", "ok", *base]) == 1  # nothing listens on port 9: git's clone says so
    assert "cannot clone http://127.0.0.1:9/r.git" in capsys.readouterr().err
    assert not (tmp_path / "ok").exists()


def test_the_socket_is_the_daemons(tmp_path: Path) -> None:
    assert daemonctl.socket_at(tmp_path) == daemonctl.socket_path(RootState(tmp_path))
    assert daemonctl.socket_at(tmp_path) == tmp_path / handoff.SOCKET  # the lean client's own copy
    assert handoff.DEFAULT_CREDENTIAL_TTL == DEFAULT_CREDENTIAL_TTL


def test_the_client_imports_only_os_socket_and_json() -> None:
    """The command's start-up is a large share of a hand-off (docs/benchmarks.md): the lean
    client loads none of the modules that were most of its imports (``re`` it does: json
    needs it, and pip's console-script shim imports it first anyway)."""
    probe = ("import sys; before = set(sys.modules); from artifactd.fs import cli, handoff; "
             "handoff.ask('/nonexistent/.artifact-fs/run/daemon.ctl', {}); "
             "print(' '.join(sorted(set(sys.modules) - before)))")
    # ``-S`` skips site, and with it an editable install's .pth: the package's own directory
    # goes on the path instead.
    import artifactd

    package_root = str(Path(artifactd.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    loaded = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": path}, timeout=60).stdout.split()
    heavy = {"pathlib", "dataclasses", "typing", "click", "http.client", "artifactd.fs.inputs",
             "artifactd.fs.daemonctl", "artifactd.fs.state"}
    assert heavy.isdisjoint(loaded), sorted(heavy & set(loaded))
