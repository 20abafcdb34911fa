"""Checks of every user string before it reaches a path, a URL or a git command line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_CREDENTIAL_TTL = 86400  # seconds git's credential cache keeps a token (add-repo)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# git check-ref-format's rules, the ones a branch typed by a user can break.
_BRANCH_BAD = re.compile(r"(^[-/.])|(\.\.)|([\x00-\x20~^:?*\[\\\x7f])|(@\{)|(/\.)|(//)|([/.]$)|(\.lock$)")


class InputError(ValueError):
    """A bad argument; the message names the argument and the fix (one line)."""


@dataclass(frozen=True)
class Remote:
    """A remote URL without credentials, and the credentials it carried (never logged)."""

    url: str
    username: str
    password: str

    @property
    def has_credentials(self) -> bool:
        return bool(self.password)

    @property
    def auth(self) -> tuple[str, str] | None:
        """(username, password) for HTTP, or ``None`` without credentials."""
        return (self.username or "x", self.password) if self.password else None

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return f"Remote(url={self.url!r})"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise InputError(f"--name {name!r} is not a valid repo name: use letters, digits, '.', '_' "
                         "and '-' (no '/', no '..', at most 100 characters)")
    return name


def check_branch(branch: str) -> str:
    if not branch or len(branch) > 255 or _BRANCH_BAD.search(branch):
        raise InputError(f"--branch {branch!r} is not a valid branch name: see git check-ref-format")
    return branch


def parse_remote(text: str) -> Remote:
    """An http(s) URL with a host and a path; credentials in it are split off."""
    try:
        parts = urlsplit(text)
        host = parts.hostname
        port = parts.port
    except ValueError:
        host, port, parts = None, None, None
    if (parts is None or parts.scheme not in ("http", "https") or not host or not parts.path.strip("/")
            or any(ch in text for ch in "\x00\r\n\t ") or parts.query or parts.fragment):
        raise InputError("--remote must be an http(s) git URL such as "
                         "https://x:TOKEN@host/git/NAMESPACE/REPO.git")
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return Remote(url=clean, username=unquote(parts.username or ""), password=unquote(parts.password or ""))


def check_mount_root(text: str) -> Path:
    root = Path(text).absolute()
    if not root.is_dir():
        raise InputError(f"--mount-root {text!r} is not a directory: create it first (mkdir -p)")
    return root
