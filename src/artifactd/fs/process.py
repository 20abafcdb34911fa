"""Starting mount processes and waiting for them: ready when the mount point is mounted."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from artifactd.fs.children import set_pdeathsig
from artifactd.fs.mountprep import Prepared
from artifactd.fs.rootfirst import EarlyRoot
from artifactd.fs.state import RepoConfig, RootState
from artifactd.fs.write.options import MountOptions

READY_TIMEOUT = 120.0
READY_POLL = 0.003  # a mount is ready within milliseconds of its process starting to serve
READY_WAKE = 0.05  # with the ready pipe: how often the child's exit and the deadline are checked


def _die_with_parent() -> None:
    # The daemon's mounts die with it, even when it is killed with SIGKILL.
    set_pdeathsig(signal.SIGTERM)


class Forked:
    """A mount process forked from the daemon (no new interpreter: half a second saved per
    mount), with the part of ``Popen``'s interface the daemon uses."""

    def __init__(self, pid: int, ready_fd: int | None = None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.ready_fd = ready_fd  # readable once the child is mounted (``mountproc.signal_ready``)
        self.forked_at = time.monotonic()

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(["mount", str(self.pid)], timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def terminate(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


def _retitle(title: str) -> None:
    """Overwrite this process's command line (``ps``, ``/proc/PID/cmdline``) with ``title``.

    A mount forked from ``artifactd mount REMOTE DIR`` would otherwise show that command,
    credentials in REMOTE included, for as long as it is mounted. Python copied its
    arguments at start-up, so the original bytes (between ``arg_start`` and ``arg_end`` of
    ``/proc/self/stat``) are the kernel's view only, and are ours to clear."""
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        start, end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5)
    except (OSError, ValueError, IndexError):
        return
    text = title.encode()[:max(0, end - start - 1)]
    ctypes.memset(start, 0, end - start)
    ctypes.memmove(start, text, len(text))


def fork(state: RootState, config: RepoConfig, cache_bytes: int | None = None,
         options: MountOptions | None = None, early: Prepared | None = None, *,
         detach: bool = False, clone: Callable[[], object] | None = None,
         given: EarlyRoot | None = None) -> Forked:
    """A mount process forked from this one. ``early``: its clone reading and remote
    answers, started before this call's import of the FUSE side, which they overlap.
    ``detach``: it outlives this process (``artifactd mount``); else it dies with it.
    ``clone``: the blobless clone, still to run: the child mounts from the root first
    and runs it behind the mount (``rootview.py``), with ``given`` its root if read already."""
    from artifactd.fs import mountproc  # imported before the fork, once for every mount

    for started in (early, given):
        if started is not None:
            started.wait()  # its threads would not exist in the child
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_write)
        if given is not None:
            given.remote.close()  # the child's now (this closes only this process's copy)
        return Forked(pid, ready_read)
    os.close(ready_read)
    mountproc.FORKED_AT = time.monotonic()  # the mount's log counts from here
    code = 1
    try:
        if detach:
            os.setsid()  # no terminal's hangup or Ctrl-C reaches it
            _retitle(f"artifact-fs mount {config.name}")
        else:
            _die_with_parent()
            if os.getppid() != parent:  # the daemon died before prctl took effect
                os._exit(1)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)  # not the daemon's handlers
        log = os.open(state.log_file(config.name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        code = mountproc.run(state.root, config.name,
                             cache_bytes if cache_bytes is not None else mountproc.DEFAULT_CACHE_BYTES,
                             options, early, clone, given, ready_write)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def start(
    state: RootState, config: RepoConfig, *, detach: bool, cache_bytes: int | None = None
) -> subprocess.Popen[bytes]:
    log = open(state.log_file(config.name), "ab")  # noqa: SIM115 - the child keeps it
    argv = [sys.executable, "-m", "artifactd.fs.mountproc", str(state.root), config.name]
    if cache_bytes is not None:
        argv.append(str(cache_bytes))
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=detach, preexec_fn=None if detach else _die_with_parent)
    finally:
        log.close()


def wait_ready(state: RootState, config: RepoConfig, proc: subprocess.Popen[bytes] | Forked,
               log_start: int) -> str | None:
    """``None`` once mounted, else the mount process's one-line error. A forked mount says
    when it is up on a pipe, so that no poll interval is added to the hand-off; the pipe
    closing (the child exited) or a process started by ``start`` is polled for."""
    deadline = time.monotonic() + READY_TIMEOUT
    ready_fd = proc.ready_fd if isinstance(proc, Forked) else None
    try:
        while time.monotonic() < deadline:
            if os.path.ismount(config.mount_point) and state.pid_file(config.name).exists():
                return None
            if proc.poll() is not None:
                exited = f"mount process exited ({proc.returncode})"
                return last_error(state, config.name, log_start) or exited
            if ready_fd is not None:
                readable, _, _ = select.select([ready_fd], [], [], READY_WAKE)
                if readable and not os.read(ready_fd, 1):  # closed without a word: it exited
                    os.close(ready_fd)
                    ready_fd = None
            else:
                time.sleep(READY_POLL)
    finally:
        if ready_fd is not None:
            os.close(ready_fd)
        if isinstance(proc, Forked):
            proc.ready_fd = None
    proc.terminate()
    return f"{config.name}: not mounted after {READY_TIMEOUT:.0f} s"


def plain_error(error: str, name: str) -> str:
    """A mount process's error line without its ``artifact-fs: NAME:`` prefix."""
    return error.removeprefix(f"artifact-fs: {name}: ")


def log_size(state: RootState, name: str) -> int:
    path = state.log_file(name)
    return path.stat().st_size if path.exists() else 0


def last_error(state: RootState, name: str, start: int) -> str:
    path = state.log_file(name)
    with contextlib.suppress(OSError), open(path, "rb") as log:
        log.seek(start)
        lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else ""
    return ""


def running_pid(state: RootState, name: str) -> int | None:
    path = state.pid_file(name)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def unmount(mount_point: Path) -> None:
    subprocess.run(["fusermount3", "-u", str(mount_point)], check=True, capture_output=True, timeout=60)
