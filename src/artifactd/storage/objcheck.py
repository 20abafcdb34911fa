"""A received object is plainly well formed, and which objects it names.

The in-process push path (services/git/push_in_process.py) keeps what ``receive.fsckObjects``
gives C git's pushes by accepting only objects that are *plainly* fine, a strict subset of
what ``git fsck`` accepts: canonical commits (``tree``, ``parent``s, ``author``,
``committer`` with well-formed identities, a header that ends), trees of canonical modes,
sorted, with no duplicate, no ``.``/``..``, no ``.git``-like, ``.gitmodules``-like or
``.gitattributes``-like name (git checks those files' contents), no non-ASCII, backslash or
``~`` names (the HFS and NTFS spellings fsck also catches), and blobs. Anything else, tags
included, raises ``Unusual``: the push is then given to C git, whose fsck decides and whose
error the client reads. So a push the in-process path takes is one git would take too.
"""

from __future__ import annotations

import re

COMMIT, TREE, BLOB, TAG = 1, 2, 3, 4

_HEX_LINE = re.compile(rb"[0-9a-f]{40}")
# fsck_ident: a name (not starting with '<', no '<', '>' or newline), one space, <email>,
# a date without a leading zero, a four-digit zone. Dates past 16 digits are left to git.
_IDENT = re.compile(rb"[^<>\n]*[^<>\n ][^<>\n]* <[^<>\n]*> (?:0|[1-9][0-9]{0,15}) [+-][0-9]{4}")
_MODES = {b"100644": BLOB, b"100755": BLOB, b"120000": BLOB, b"40000": TREE, b"160000": None}
_SAFE_NAME = re.compile(rb"[\x21-\x7e ]+")  # printable ASCII and space
_GIT_LIKE = re.compile(rb"(?:\.git|\.gitmodules|\.gitattributes|\.mailmap)(?:[ .:].*)?",
                       re.IGNORECASE | re.DOTALL)
_SHORT_NAME = re.compile(rb".*~[0-9].*", re.DOTALL)


class Unusual(Exception):
    """Not plainly well formed: C git is to decide about it."""


Link = tuple[int | None, bytes]  # (the kind the object must have, or None; 20-byte id)


def links(kind: int, data: bytes) -> list[Link]:
    """The objects ``data`` names (a gitlink's commit is not one: it lives elsewhere), once
    its format was checked; raises ``Unusual``."""
    if kind == BLOB:
        return []
    if kind == COMMIT:
        return _commit(data)
    if kind == TREE:
        return _tree(data)
    raise Unusual("a tag or unknown object")


def _commit(data: bytes) -> list[Link]:
    header_end = data.find(b"\n\n")
    if header_end < 0 or b"\0" in data[:header_end]:
        raise Unusual("unterminated or NUL in commit header")
    lines = data[:header_end].split(b"\n")
    found: list[Link] = []
    at = 0
    if not lines[0].startswith(b"tree ") or not _HEX_LINE.fullmatch(lines[0][5:]):
        raise Unusual("bad tree line")
    found.append((TREE, bytes.fromhex(lines[0][5:].decode())))
    at = 1
    while at < len(lines) and lines[at].startswith(b"parent "):
        if not _HEX_LINE.fullmatch(lines[at][7:]):
            raise Unusual("bad parent line")
        found.append((COMMIT, bytes.fromhex(lines[at][7:].decode())))
        at += 1
    for field in (b"author ", b"committer "):
        if at >= len(lines) or not lines[at].startswith(field) \
                or not _IDENT.fullmatch(lines[at][len(field):]):
            raise Unusual(f"bad {field.decode().strip()} line")
        at += 1
    for line in lines[at:]:  # encoding, gpgsig and its continuation lines, mergetag ...
        if line.startswith((b"tree ", b"parent ", b"author ", b"committer ")):
            raise Unusual("repeated commit header")
    return found


def _tree(data: bytes) -> list[Link]:
    found: list[Link] = []
    at, size = 0, len(data)
    previous: bytes | None = None
    names: set[bytes] = set()
    while at < size:
        space = data.find(b" ", at, at + 7)
        if space < 0:
            raise Unusual("bad tree entry mode")
        mode = data[at:space]
        if mode not in _MODES:
            raise Unusual("unusual tree entry mode")
        nul = data.find(b"\0", space + 1)
        if nul < 0 or nul + 21 > size:
            raise Unusual("truncated tree")
        name = data[space + 1:nul]
        if (not _SAFE_NAME.fullmatch(name) or name in (b".", b"..") or b"/" in name
                or b"\\" in name or _GIT_LIKE.fullmatch(name) or _SHORT_NAME.fullmatch(name)
                or name.lower() == b"git~1"):
            raise Unusual("a tree entry name fsck looks at closely")
        # git's tree order: names compared as if a directory's ended with '/'.
        key = name + b"/" if mode == b"40000" else name
        if (previous is not None and key <= previous) or name in names:
            raise Unusual("tree not sorted or with duplicate entries")
        previous = key
        names.add(name)
        expected = _MODES[mode]
        if expected is not None:
            found.append((expected, data[nul + 1:nul + 21]))
        at = nul + 21
    return found
