"""The one place that runs ``git``.

Rules (see DESIGN "Git data plane"):

- argv is a fixed list built here; callers pass git subcommands and *validated* values only,
  and put user-derived values after ``--end-of-options`` / ``--`` where git accepts it;
- the environment is an allowlist: nothing from the server's own environment leaks in
  except ``PATH``, and nothing from a client reaches git except a validated
  ``GIT_PROTOCOL`` value;
- server-side configuration is given with ``-c`` so a repo's own config cannot turn on hooks
  or other behaviour: hooks come only from the server-owned ``core.hooksPath``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from artifactd.storage.orphans import DATA_DIR_VAR, OWNER_VAR
from artifactd.storage.pushhooks import install_hooks

GIT = shutil.which("git") or "git"
NICE = shutil.which("nice")

# Applied to every git process we start.
BASE_CONFIG: tuple[tuple[str, str], ...] = (
    ("safe.directory", "*"),
    ("core.askPass", ""),
    ("credential.helper", ""),
    ("protocol.allow", "never"),
    ("protocol.file.allow", "never"),
    ("protocol.https.allow", "always"),
    ("protocol.http.allow", "always"),
    ("uploadpack.allowFilter", "true"),
    ("uploadpack.allowAnySHA1InWant", "false"),
    ("uploadpack.allowReachableSHA1InWant", "true"),
    ("receive.fsckObjects", "true"),
    ("transfer.fsckObjects", "true"),
    ("gc.auto", "0"),
    # receive-pack otherwise starts ``git gc --auto`` after every push only for it to find
    # gc.auto=0 and exit: a process per push for nothing (the server runs maintenance).
    ("receive.autoGc", "false"),
    ("maintenance.auto", "false"),
    ("core.logAllRefUpdates", "false"),
    # Every push and fetch is kept as the pack it arrived as, however few objects it holds:
    # git unpacks a pack of fewer than ``unpackLimit`` objects into loose files (default 100,
    # each a file and often a fan-out directory of its own), so 1 means "always keep".
    ("transfer.unpackLimit", "1"),
    ("receive.unpackLimit", "1"),
    ("fetch.unpackLimit", "1"),
)

# What a repository's own ``config`` file would say; repos have none (see
# ``repostore.SKELETON_DIRS``). ``core.bare`` matters: without it git takes the working
# directory for a work tree and receive-pack refuses updates to the checked-out branch.
REPO_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.repositoryFormatVersion", "0"),
    ("core.bare", "true"),
)


class GitError(Exception):
    """A git process failed; ``stderr`` is git's own explanation."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str):
        super().__init__(f"git {' '.join(args[:2])} failed ({returncode}): {stderr.strip()[:500]}")
        self.returncode = returncode
        self.stderr = stderr


# Niceness of background git (maintenance): it yields to everything serving clients.
BACKGROUND_NICE = 19


class GitRunner:
    def __init__(self, data_dir: Path, owner: str = "", nice: int = 0):
        # Every git runs this much nicer than the server, so that on a busy machine the
        # event loop (every control-plane request, every pipe a git writes to) gets the CPU
        # first. ``nice`` is exec'd in front of git because ``Popen`` can only lower a
        # child's priority with ``preexec_fn``, which turns vfork into a full fork.
        self.nice = nice
        # Marks every git we start (and every helper git starts) as ours, so that what
        # outlives a crash of this process can be found and ended (see ``orphans``).
        self.marks = {DATA_DIR_VAR: str(data_dir), OWNER_VAR: owner}
        self.hooks_dir = data_dir / "hooks"
        self.home = data_dir / "tmp" / "git-home"
        self.hooks_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        install_hooks(self.hooks_dir)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C",
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ALLOW_PROTOCOL": "https:http",
            **self.marks,
        }
        if extra:
            env.update(extra)
        return env

    def argv(
        self, git_dir: Path | None, args: Sequence[str], config: Sequence[tuple[str, str]] = (),
        nice: int | None = None,
    ) -> list[str]:
        niceness = self.nice if nice is None else nice
        argv = [NICE, "-n", str(niceness), GIT] if niceness > 0 and NICE else [GIT]
        repo_config = REPO_CONFIG if git_dir is not None else ()
        for key, value in (*BASE_CONFIG, *repo_config, ("core.hooksPath", str(self.hooks_dir)),
                           *config):
            argv += ["-c", f"{key}={value}"]
        if git_dir is not None:
            argv.append(f"--git-dir={git_dir}")
        argv += list(args)
        return argv

    def run(
        self,
        git_dir: Path | None,
        args: Sequence[str],
        *,
        input: bytes | None = None,
        config: Sequence[tuple[str, str]] = (),
        env: Mapping[str, str] | None = None,
        timeout: float | None = 600,
        check: bool = True,
        cwd: Path | None = None,
        low_priority: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run git to completion (admin paths: fork, import, maintenance).

        ``low_priority`` runs it at ``BACKGROUND_NICE`` so background work (maintenance)
        yields the CPU to git processes serving clients.
        """
        argv = self.argv(git_dir, args, config, BACKGROUND_NICE if low_priority else None)
        result = subprocess.run(
            argv, input=input, capture_output=True,
            env=self.env(env), timeout=timeout, cwd=cwd, check=False,
        )
        if check and result.returncode != 0:
            raise GitError(list(args), result.returncode, result.stderr.decode(errors="replace"))
        return result

    def start(
        self,
        git_dir: Path | None,
        args: Sequence[str],
        *,
        config: Sequence[tuple[str, str]] = (),
        env: Mapping[str, str] | None = None,
        stderr: IO[bytes] | int | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running git in the background and return at once (imports).

        The caller watches it (time, disk use) and stops it with ``kill_group``: like
        ``spawn``, it leads its own process group, so the remote helper and index-pack it
        starts are stopped with it.
        """
        return subprocess.Popen(
            self.argv(git_dir, args, config), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=stderr, env=self.env(env), start_new_session=True,
        )

    async def spawn_piped(
        self,
        git_dir: Path | None,
        args: Sequence[str],
        *,
        config: Sequence[tuple[str, str]] = (),
        env: Mapping[str, str] | None = None,
        stdin: bool = True,
        limit: int = 1 << 16,
        pass_fds: Sequence[int] = (),
        stderr: bool = True,
        off_loop: bool = False,
    ) -> PipedGit:
        """Start git with its pipes attached to the running event loop (the HTTP data plane).

        Unlike ``spawn`` this does not use the loop's subprocess support: under uvloop
        (uvicorn's default loop) that forks the whole server, about 6 ms for each git request,
        while ``subprocess.Popen`` uses vfork (under 1 ms). The exit is watched with a pidfd,
        so no thread waits for it. The process leads its own process group. ``pass_fds``
        stay open in git and its hooks (receive-pack's channel to the server). Without
        ``stderr`` git's stderr goes to /dev/null and ``PipedGit.stderr`` is at its end.

        ``off_loop`` starts the process from a worker thread: ``Popen`` (vfork and exec,
        ``close_fds``, no ``preexec_fn``) then costs the loop nothing but the thread hop, so
        many starts at once (reads fanning out over many repos) do not stall other requests.
        """
        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                self.argv(git_dir, args, config),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if stderr else subprocess.DEVNULL, env=self.env(env),
                start_new_session=True, pass_fds=tuple(pass_fds),
            )

        proc = await _popen_off_loop(popen) if off_loop else popen()
        for pipe in (proc.stdout, proc.stdin):
            if pipe is not None:
                _widen_pipe(pipe.fileno())
        try:
            return await PipedGit.attach(proc, limit)
        except BaseException:
            self.kill_group(proc)
            proc.wait()
            raise

    @staticmethod
    def kill_group(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a process started by ``start`` and every process in its group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    async def spawn(
        self,
        git_dir: Path | None,
        args: Sequence[str],
        *,
        config: Sequence[tuple[str, str]] = (),
        env: Mapping[str, str] | None = None,
        stdin: int | None = subprocess.PIPE,
        stderr: int | None = subprocess.PIPE,
        limit: int = 1 << 16,
    ) -> asyncio.subprocess.Process:
        """Start git with pipes for streaming (the HTTP data plane, cat-file --batch).

        The process leads its own process group (``start_new_session``) so that the helpers
        it starts (pack-objects, index-pack) can be signalled with it. ``limit`` is the
        stdout buffer size: larger buffers mean fewer, larger reads when streaming packs.
        """
        return await asyncio.create_subprocess_exec(
            *self.argv(git_dir, args, config),
            stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, env=self.env(env),
            start_new_session=True, limit=limit,
        )


async def _popen_off_loop(popen: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """``popen()`` in a worker thread; a process started for a caller that was cancelled
    meanwhile is killed and reaped, never left running.

    Whichever side comes second under the lock ends the process: the thread, when it
    finds the caller gone, or the cancelled caller, when the thread already handed it one.
    No loop callback is involved, so it holds even when the loop closes right after.
    """
    lock = threading.Lock()
    started: list[subprocess.Popen[bytes]] = []
    abandoned = False

    def start() -> subprocess.Popen[bytes]:
        proc = popen()
        with lock:
            if not abandoned:
                started.append(proc)
                return proc
        _end(proc)
        return proc

    try:
        return await asyncio.to_thread(start)
    except asyncio.CancelledError:
        with lock:
            abandoned = True
            orphan = started.pop() if started else None
        if orphan is not None:
            _end(orphan)
        raise


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Kill a process nobody will use, close our pipe ends and reap it."""
    GitRunner.kill_group(proc)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    proc.wait()


class PipedGit:
    """A running git whose stdin/stdout/stderr are asyncio streams; see ``spawn_piped``."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin: asyncio.StreamWriter | None,
                 stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 transports: list[asyncio.BaseTransport], exited: asyncio.Future[None]):
        self.popen = proc
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._transports = transports
        self._exited = exited

    @classmethod
    async def attach(cls, proc: subprocess.Popen[bytes], limit: int) -> PipedGit:
        loop = asyncio.get_running_loop()
        assert proc.stdout is not None
        transports: list[asyncio.BaseTransport] = []
        readers = []
        for pipe in (proc.stdout, proc.stderr):
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            readers.append(reader)
            if pipe is None:  # stderr to /dev/null: a reader already at its end
                reader.feed_eof()
                continue
            transport, _ = await loop.connect_read_pipe(
                _reader_protocol(reader, loop), _hand_over(loop, pipe)
            )
            transports.append(transport)
        writer = None
        if proc.stdin is not None:
            w_transport, w_protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, _hand_over(loop, proc.stdin)
            )
            transports.append(w_transport)
            writer = asyncio.StreamWriter(w_transport, w_protocol, None, loop)
        return cls(proc, writer, readers[0], readers[1], transports, _watch_exit(loop, proc))

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    async def wait(self) -> int:
        await asyncio.shield(self._exited)
        return self.popen.wait()

    def close(self) -> None:
        """Close our ends of the pipes (after the process is gone)."""
        for transport in self._transports:
            transport.close()


class _LibuvOwnedFd:
    """A pipe end handed to uvloop: libuv closes the descriptor, so ``close`` must not.

    uvloop closes the fd itself and then calls ``close()`` on the file object it was given,
    expecting EBADF. With a real file object that second close races other threads: by
    then the number can belong to a new socket or pipe (seen under load as dropped client
    connections and EBADF in unrelated subprocesses).
    """

    def __init__(self, fd: int):
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        pass


def _hand_over(loop: asyncio.AbstractEventLoop, pipe: IO[bytes]) -> object:
    """The object to give ``connect_*_pipe`` so that exactly one party closes the fd."""
    if not type(loop).__module__.startswith("uvloop"):
        return pipe  # asyncio's transports close the file object, once
    fd = os.dup(pipe.fileno())
    pipe.close()  # our copy, closed now and by us; libuv owns the duplicate
    return _LibuvOwnedFd(fd)


PIPE_SIZE = 1 << 20  # Linux's default pipe-max-size; the default pipe holds only 64 KiB


def _widen_pipe(fd: int) -> None:
    """Let git run up to 1 MiB ahead of the server: when streaming a pack the loop then
    does about a third of the pipe reads (measured). Best effort (Linux only)."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setpipe, PIPE_SIZE)


def _reader_protocol(
    reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop
) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: asyncio.StreamReaderProtocol(reader, loop=loop)


_WAITERS: set[asyncio.Task[None]] = set()  # keeps fallback waiter tasks referenced


def _watch_exit(loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> asyncio.Future[None]:
    """A future done when ``proc`` has exited (and been reaped)."""
    exited: asyncio.Future[None] = loop.create_future()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        # No pidfd (old kernel, not Linux): a thread waits instead.
        async def wait_in_thread() -> None:
            await asyncio.to_thread(proc.wait)
            if not exited.done():
                exited.set_result(None)

        task = loop.create_task(wait_in_thread())
        _WAITERS.add(task)
        task.add_done_callback(_WAITERS.discard)
        return exited

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        proc.wait()
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    return exited
