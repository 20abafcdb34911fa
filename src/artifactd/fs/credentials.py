"""Credentials from a remote URL, kept in memory only: git's own credential cache.

``add-repo`` hands the token to ``git credential-cache`` (a daemon holding credentials in
memory behind a private Unix socket, which exits after ``ttl`` seconds); the clone's config
names that helper and socket, nothing more. git's fetches and the mount's own HTTP requests
ask the cache; the token is never in a file, a command line or a log.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from artifactd.fs.gitcmd import run_git
from artifactd.fs.inputs import Remote


def helper_setting(socket: Path) -> str:
    return f"cache --socket {socket}"


def _request(url: str, extra: str = "") -> bytes:
    parts = urlsplit(url)
    return (f"protocol={parts.scheme}\nhost={parts.netloc}\npath={parts.path.lstrip('/')}\n"
            f"{extra}\n").encode()


def store(socket: Path, remote: Remote, ttl: int) -> None:
    username = remote.username or "x"
    run_git(["credential-cache", f"--timeout={ttl}", f"--socket={socket}", "store"],
            stdin=_request(remote.url, f"username={username}\npassword={remote.password}\n"))


def fill(socket: Path, url: str) -> tuple[str, str] | None:
    """The cached (username, password) for ``url``, or ``None`` (expired or never stored)."""
    if not socket.exists():
        return None
    out = run_git(["credential-cache", f"--socket={socket}", "get"], stdin=_request(url))
    fields = dict(line.split("=", 1) for line in out.decode().splitlines() if "=" in line)
    if "password" not in fields:
        return None
    return fields.get("username", "x"), fields["password"]


def erase(socket: Path, url: str) -> None:
    if socket.exists():
        run_git(["credential-cache", f"--socket={socket}", "erase"], stdin=_request(url))


def stop(socket: Path) -> None:
    if socket.exists():
        run_git(["credential-cache", f"--socket={socket}", "exit"])
