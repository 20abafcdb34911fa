"""The credential helper's cache of minted repo tokens, so that git commands in a row reuse one.

One JSON file, ``$XDG_CACHE_HOME/artifactd/git-tokens.json`` (else ``~/.cache/...``), mode 0600
in a 0700 directory, written atomically. An entry is keyed by a hash of everything that
decides the token (server, account, API token, remote, scope), so another login or another
scope never picks up a token it did not mint; it holds the token secret and its expiry, and
is used only while enough of its life is left. A file that other users may read is not
trusted (a token in it may have leaked): it is ignored and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CACHE_NAME = "git-tokens.json"
PRIVATE_MODE = 0o600
# A cached token is handed out only with this much life left: git checks it on every
# request of the command, and a slow clone or push sends its last request minutes later.
REUSE_MARGIN = 120.0


@dataclass(frozen=True)
class CachedToken:
    secret: str
    expires_at: float  # unix seconds


def cache_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "artifactd" / CACHE_NAME


def cache_key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _read(path: Path) -> dict[str, dict[str, object]]:
    try:
        info = path.stat()
        if info.st_mode & 0o077 or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            return {}
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _write(path: Path, entries: Mapping[str, Mapping[str, object]]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entries, handle)
        os.chmod(temporary, PRIVATE_MODE)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _live(entries: Mapping[str, Mapping[str, object]], now: float) -> dict[str, dict[str, object]]:
    kept: dict[str, dict[str, object]] = {}
    for key, entry in entries.items():
        expires = entry.get("expires_at") if isinstance(entry, Mapping) else None
        if isinstance(expires, int | float) and expires > now and isinstance(entry.get("secret"), str):
            kept[key] = dict(entry)
    return kept


def lookup(path: Path, key: str, now: float | None = None) -> CachedToken | None:
    now = time.time() if now is None else now
    entry = _read(path).get(key)
    if not isinstance(entry, dict):
        return None
    secret, expires = entry.get("secret"), entry.get("expires_at")
    if not isinstance(secret, str) or not isinstance(expires, int | float):
        return None
    if expires - now < REUSE_MARGIN:
        return None
    return CachedToken(secret, float(expires))


def remember(path: Path, key: str, token: CachedToken, now: float | None = None) -> None:
    """Add a token; expired entries are dropped on the way. A cache that cannot be written
    only costs a mint per git command, so errors are swallowed."""
    now = time.time() if now is None else now
    entries = _live(_read(path), now)
    entries[key] = {"secret": token.secret, "expires_at": token.expires_at}
    with contextlib.suppress(OSError):
        _write(path, entries)


def forget_secret(path: Path, secret: str) -> bool:
    """Drop every entry holding ``secret`` (git erases a credential the server refused)."""
    entries = _read(path)
    kept = {key: entry for key, entry in entries.items()
            if not (isinstance(entry, dict) and entry.get("secret") == secret)}
    if len(kept) == len(entries):
        return False
    try:
        _write(path, kept)
    except OSError:
        return False
    return True
