"""Every child a mount starts dies with it (``fs/children.py``: ``PR_SET_PDEATHSIG``): a
mount process SIGKILLed while its blobless clone runs leaves no ``git clone`` behind."""

# ruff: noqa: F811 - the mount fixtures (root) are test_mount's, imported by name

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactd.fs import children
from tests.harness import Server
from tests.test_mount import FILES, auth_remote, make_repo, root  # noqa: F401 - fixtures

DEADLINE = 30.0


class HeldClone:
    """A ``git`` first on PATH whose ``clone`` blocks in the shell itself (a builtin ``read``
    of a FIFO: no grandchild), so the process the mount started is the one that must die."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.fifo = folder / "gate"
        self.started = folder / "started"
        os.mkfifo(self.fifo)
        shim = folder / "git"
        shim.write_text(f"""#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = clone ]; then echo $$ > "{self.started}"; read _ < "{self.fifo}"; break; fi
done
exec "{shutil.which('git')}" "$@"
""")
        shim.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"\n")
            os.close(fd)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[HeldClone]:
    gate = HeldClone(tmp_path / "held")
    yield gate
    gate.release()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {DEADLINE:.0f} s")
        time.sleep(0.02)


def test_a_killed_mount_takes_its_clone_with_it(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, held: HeldClone
) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, FILES)
    target = root / "work"
    result = subprocess.run([sys.executable, "-m", "artifactd", "mount", auth_remote(remote, token), str(target)],
                            capture_output=True, text=True, timeout=120, env=held.env)
    assert result.returncode == 0, result.stderr
    try:
        mount_pid = int((root / ".artifact-fs" / "run" / "work.pid").read_text())
        _wait_for(held.started.exists, "cloning")
        _wait_for(lambda: held.started.read_text().strip().isdigit(), "cloning")
        clone_pid = int(held.started.read_text())
        assert _parent(clone_pid) == mount_pid  # the mount's own child, held mid-clone
        os.kill(mount_pid, signal.SIGKILL)
        _wait_for(lambda: not _alive(mount_pid), "the mount gone")
        _wait_for(lambda: not _alive(clone_pid), "its git clone gone")
    finally:
        held.release()
        subprocess.run(["fusermount3", "-u", "-z", str(target)], capture_output=True, timeout=60)


def test_a_child_started_with_die_with_parent_gets_the_signal(tmp_path: Path) -> None:
    """The preexec itself: a grandchild started by a parent that is then SIGKILLed."""
    marker = tmp_path / "child.pid"
    code = ("import subprocess, sys\n"
            "from artifactd.fs.children import die_with_parent\n"
            f"p = subprocess.Popen(['sleep', '600'], preexec_fn=die_with_parent())\n"
            f"open({str(marker)!r}, 'w').write(str(p.pid))\n"
            "sys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        _wait_for(lambda: marker.exists() and marker.read_text().isdigit(), "started")
        child = int(marker.read_text())
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=30)
        _wait_for(lambda: not _alive(child), "the child gone")
    finally:
        parent.kill()
        parent.wait(timeout=30)
    assert children.PR_SET_PDEATHSIG == 1
