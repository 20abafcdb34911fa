"""Parsers for raw git objects as ``cat-file`` prints them: commits and trees.

Pure functions over bytes, so they are cheap to test exhaustively. Git is lenient about
what it stores (old tools wrote odd identities, messages in legacy encodings, file names
that are not UTF-8); these parsers never raise on such input, they degrade: an identity
that does not parse keeps its raw text as the name, undecodable bytes become U+FFFD.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

_IDENT = re.compile(rb"^(.*?) ?<([^<>]*)> (-?\d+) ([+-])(\d\d)(\d\d)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Identity:
    name: str
    email: str
    timestamp: int  # seconds since the epoch
    date: str  # ISO-8601 in the identity's own UTC offset, e.g. 2024-05-01T12:00:00+02:00


@dataclass(frozen=True)
class Commit:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author: Identity
    committer: Identity
    message: str


@dataclass(frozen=True)
class TreeEntry:
    name: str
    mode: str  # six octal digits, as `git ls-tree` prints them: 100644, 100755, 120000, 040000, 160000
    type: str  # blob | tree | commit
    sha: str


def _decode(raw: bytes, encoding: str = "utf-8") -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = "utf-8"
    return raw.decode(encoding, errors="replace")


_ZONES: dict[bytes, timezone] = {}


def _iso(timestamp: int, sign: bytes, hours: bytes, minutes: bytes) -> str:
    key = sign + hours + minutes
    tz = _ZONES.get(key)
    if tz is None:
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        try:
            tz = timezone(-offset if sign == b"-" else offset)
        except ValueError:  # an offset of a day or more: git stores it, datetime cannot
            tz = UTC
        if len(_ZONES) < 4096:
            _ZONES[key] = tz
    try:
        return datetime.fromtimestamp(timestamp, tz).isoformat()
    except (OverflowError, OSError, ValueError):  # absurd dates: fall back to the epoch
        return _EPOCH.isoformat()


def parse_identity(raw: bytes, encoding: str = "utf-8") -> Identity:
    """``Name <email> 1700000000 +0100`` (the author/committer header value)."""
    match = _IDENT.match(raw)
    if match is None:
        return Identity(_decode(raw, encoding), "", 0, _EPOCH.isoformat())
    name, email, seconds, sign, hours, minutes = match.groups()
    timestamp = int(seconds)
    return Identity(
        _decode(name, encoding), _decode(email, encoding), timestamp,
        _iso(timestamp, sign, hours, minutes),
    )


def commit_date(raw: bytes) -> int:
    """The committer timestamp of a raw commit (what git's default log order sorts by)."""
    for line in raw.split(b"\n"):
        if not line:
            break
        if line.startswith(b"committer "):
            match = _IDENT.match(line[10:])
            return int(match.group(3)) if match else 0
    return 0


def parse_commit(sha: str, raw: bytes) -> Commit:
    header, _, body = raw.partition(b"\n\n")
    tree = ""
    parents: list[str] = []
    author = committer = b""
    encoding = "utf-8"
    for line in header.split(b"\n"):
        # Continuation lines (a multi-line gpgsig or mergetag) start with a space.
        if line.startswith(b" "):
            continue
        key, _, value = line.partition(b" ")
        if key == b"tree":
            tree = value.decode("ascii", errors="replace")
        elif key == b"parent":
            parents.append(value.decode("ascii", errors="replace"))
        elif key == b"author":
            author = value
        elif key == b"committer":
            committer = value
        elif key == b"encoding":
            encoding = value.decode("ascii", errors="replace").strip() or "utf-8"
    return Commit(
        sha=sha, tree=tree, parents=tuple(parents),
        author=parse_identity(author, encoding), committer=parse_identity(committer, encoding),
        message=_decode(body, encoding),
    )


def commit_parents(raw: bytes) -> list[str]:
    parents = []
    for line in raw.split(b"\n"):
        if not line:
            break
        if line.startswith(b"parent "):
            parents.append(line[7:].decode("ascii", errors="replace"))
    return parents


_S_IFMT, _S_IFREG, _S_IFLNK, _S_IFDIR, _S_IFGITLINK = 0o170000, 0o100000, 0o120000, 0o040000, 0o160000
_TYPE_OF_MODE = {_S_IFDIR: "tree", _S_IFGITLINK: "commit"}


def canonical_mode(raw: bytes) -> tuple[str, str] | None:
    """A tree entry's mode as ``git ls-tree`` prints it, and the entry's type.

    This is git's ``canon_mode``: old histories (git's own among them) hold modes such as
    ``100664`` and zero-padded ``040000``, which git reads as ``100644`` and ``040000``. A
    regular file is ``100755`` when the owner's execute bit is set, else ``100644``; any
    other non-link, non-directory mode is a gitlink. ``None`` when ``raw`` is not octal.
    """
    if not raw or raw.strip(b"01234567"):
        return None
    mode = int(raw, 8)
    kind = mode & _S_IFMT
    if kind == _S_IFREG:
        mode = 0o100755 if mode & 0o100 else 0o100644
    elif kind not in (_S_IFLNK, _S_IFDIR):
        mode = _S_IFGITLINK
    else:
        mode = kind
    return f"{mode:06o}", _TYPE_OF_MODE.get(mode, "blob")


def parse_tree(raw: bytes) -> list[TreeEntry]:
    """Entries of a raw tree: ``<mode> <name>\\0<20-byte sha>`` repeated."""
    entries: list[TreeEntry] = []
    pos = 0
    end = len(raw)
    while pos < end:
        space = raw.find(b" ", pos)
        nul = raw.find(b"\0", space + 1)
        if space < 0 or nul < 0 or nul + 21 > end:
            break  # truncated or corrupt: return what parsed
        mode = raw[pos:space]
        name = raw[space + 1:nul]
        sha = raw[nul + 1:nul + 21].hex()
        pos = nul + 21
        # A mode git itself could not parse is shown as stored rather than refused.
        shown, kind = canonical_mode(mode) or (mode.decode("ascii", errors="replace"), "blob")
        entries.append(TreeEntry(name.decode("utf-8", errors="replace"), shown, kind, sha))
    return entries
