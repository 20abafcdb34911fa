"""Which server process owns a work area or a git process, and whether that process lives.

Every process that opens the stores claims an *owner token* (16 random hex digits) and
holds an exclusive ``flock`` on ``tmp/locks/owner-<token>.lock`` for as long as it runs.
The kernel drops the lock when the process dies, however it dies (``kill -9`` included), so
"can I take that lock?" answers "is the owner gone?" without pids (which are reused) and
across the workers of one data dir. The token is written into everything the process
leaves on disk or in the process table while it works: staging directory names, fork
intents, and the environment of every git it starts (``ARTIFACTD_GIT_OWNER``). Start-up then
reclaims exactly what dead owners left, and never touches what a live one is making.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from pathlib import Path

OWNER_RE = re.compile(r"[0-9a-f]{16}")
_PREFIX = "owner-"
_SUFFIX = ".lock"


def locks_dir(data_dir: Path) -> Path:
    return data_dir / "tmp" / "locks"


class Owner:
    """This process's claim: a token and the lock that proves it is alive."""

    def __init__(self, data_dir: Path):
        self.directory = locks_dir(data_dir)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(8)
        # Locked under a private name first and renamed into place, so that nobody can see
        # the file (and take it for a dead owner's) before we hold the lock.
        claiming = self.directory / f".claim-{self.token}"
        self._fd: int | None = os.open(claiming, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(claiming, self._path(self.token))

    def _path(self, token: str) -> Path:
        return self.directory / f"{_PREFIX}{token}{_SUFFIX}"

    def release(self) -> None:
        """Give up the claim (a clean exit): nothing of ours is left to reclaim."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path(self.token))
            os.close(self._fd)
            self._fd = None

    def is_alive(self, token: str) -> bool:
        """Whether the process that claimed ``token`` still runs (ours always does)."""
        if token == self.token:
            return self._fd is not None
        if not OWNER_RE.fullmatch(token):
            return False
        try:
            fd = os.open(self._path(token), os.O_RDWR)
        except FileNotFoundError:
            return False  # released or already reclaimed
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def dead_tokens(self) -> list[str]:
        """Tokens whose lock file is still there but whose owner is gone (it crashed)."""
        dead = []
        for path in self.directory.glob(f"{_PREFIX}*{_SUFFIX}"):
            token = path.name[len(_PREFIX):-len(_SUFFIX)]
            if OWNER_RE.fullmatch(token) and not self.is_alive(token):
                dead.append(token)
        return dead

    def forget(self, token: str) -> None:
        """Drop a dead owner's lock file once everything it left was reclaimed."""
        if token != self.token and OWNER_RE.fullmatch(token):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(token))
