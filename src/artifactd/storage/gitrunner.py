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
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

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
    ("maintenance.auto", "false"),
    ("core.logAllRefUpdates", "false"),
)


class GitError(Exception):
    """A git process failed; ``stderr`` is git's own explanation."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str):
        super().__init__(f"git {' '.join(args[:2])} failed ({returncode}): {stderr.strip()[:500]}")
        self.returncode = returncode
        self.stderr = stderr


class GitRunner:
    def __init__(self, data_dir: Path):
        self.hooks_dir = data_dir / "hooks"
        self.home = data_dir / "tmp" / "git-home"
        self.hooks_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)

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
        }
        if extra:
            env.update(extra)
        return env

    def argv(
        self, git_dir: Path | None, args: Sequence[str], config: Sequence[tuple[str, str]] = ()
    ) -> list[str]:
        argv = [GIT]
        for key, value in (*BASE_CONFIG, ("core.hooksPath", str(self.hooks_dir)), *config):
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

        ``low_priority`` runs it under ``nice -n 19`` so background work (maintenance)
        yields the CPU to git processes serving clients.
        """
        argv = self.argv(git_dir, args, config)
        if low_priority and NICE:
            argv = [NICE, "-n", "19", *argv]
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
