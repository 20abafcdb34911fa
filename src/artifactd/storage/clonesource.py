"""What a clone of a small repo is made of, read in process through libgit2 (pygit2).

Two reads, each on an open ``pygit2.Repository`` (the worker's object reader holds them):

- ``list_refs``: every ref with its object id (and the tag's peeled id), and where ``HEAD``
  points, which is what ``git upload-pack``'s ``ls-refs`` reports;
- ``reachable``: the raw bytes of every object reachable from some tips, walked from the
  objects' own text (commit ``tree``/``parent`` lines, tree entries, tag ``object`` lines),
  which is what ``pack-objects --revs`` sends for a clone, without deltas.

Both give up (``TooLarge``, ``Unusual``) rather than guess: the caller then lets C git
answer, so every case that is not the plain small clone keeps git's own behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import pygit2
from pygit2.enums import ObjectType, ReferenceType

COMMIT, TREE, BLOB, TAG = (int(ObjectType.COMMIT), int(ObjectType.TREE), int(ObjectType.BLOB),
                           int(ObjectType.TAG))
_MAX_TAG_CHAIN = 16
_GITLINK = b"160000"
_DIRECTORY = b"40000"


class TooLarge(Exception):
    """More objects or bytes than the caller allows."""


class Unusual(Exception):
    """Something git would treat in its own way (a symbolic ref besides ``HEAD``, a ref to a
    missing object, an object of an unexpected type): leave the request to git."""


@dataclass(frozen=True)
class Ref:
    name: str
    oid: str
    peeled: str | None  # the object an annotated tag points at (tags followed to the end)


@dataclass(frozen=True)
class Refs:
    head_target: str | None  # the ref HEAD names (``refs/heads/main``), None if detached
    head_oid: str | None  # what HEAD resolves to; None when its branch does not exist yet
    head_peeled: str | None
    refs: list[Ref]  # sorted by name, bytewise, as git iterates them


def _peeled(repo: pygit2.Repository, oid: pygit2.Oid) -> str | None:
    """The end of a tag chain starting at ``oid``, or None if ``oid`` is not a tag."""
    current, peeled = oid, None
    for _ in range(_MAX_TAG_CHAIN):
        try:
            kind, data = repo.odb.read(current)
        except KeyError:
            raise Unusual(f"missing object {current}") from None
        if kind != TAG:
            return peeled
        current = pygit2.Oid(hex=_tag_target(data))
        peeled = str(current)
    raise Unusual("tag chain too long")


def list_refs(repo: pygit2.Repository) -> Refs:
    refs: list[Ref] = []
    for name in sorted(repo.raw_listall_references()):
        text = name.decode("utf-8", "surrogateescape")
        ref = repo.references[text]
        if ref.type != ReferenceType.DIRECT:
            raise Unusual(f"symbolic ref {text}")
        oid = ref.target
        assert isinstance(oid, pygit2.Oid)
        if not repo.odb.exists(oid):
            raise Unusual(f"ref {text} points at a missing object")
        refs.append(Ref(text, str(oid), _peeled(repo, oid)))
    head = repo.references.get("HEAD")
    if head is None:
        raise Unusual("no HEAD")
    head_target: str | None = None
    head_oid: str | None = None
    head_peeled: str | None = None
    if head.type == ReferenceType.SYMBOLIC:
        target = head.target
        assert isinstance(target, str)
        head_target = target
        pointed = next((r for r in refs if r.name == target), None)
        if pointed is not None:
            head_oid, head_peeled = pointed.oid, pointed.peeled
    else:
        oid = head.target
        assert isinstance(oid, pygit2.Oid)
        if not repo.odb.exists(oid):
            raise Unusual("HEAD points at a missing object")
        head_oid, head_peeled = str(oid), _peeled(repo, oid)
    return Refs(head_target, head_oid, head_peeled, refs)


def _tag_target(data: bytes) -> str:
    if not data.startswith(b"object ") or len(data) < 48 or data[47:48] != b"\n":
        raise Unusual("malformed tag")
    return data[7:47].decode("ascii")


def _commit_links(data: bytes) -> list[bytes]:
    """The hex ids of a commit's tree and parents, from its header lines."""
    links: list[bytes] = []
    at = 0
    while True:
        end = data.find(b"\n", at)
        if end <= at:  # the blank line ending the header (or a malformed commit)
            break
        line = data[at:end]
        if line.startswith(b"tree ") or line.startswith(b"parent "):
            links.append(line.split(b" ", 1)[1])
        elif links and not line.startswith(b"parent "):
            break  # tree and parents come first: the rest of the header names no object
        at = end + 1
    if not links or len(links[0]) != 40:
        raise Unusual("malformed commit")
    return links


def _tree_entries(data: bytes) -> list[tuple[bool, bytes]]:
    """``(is_tree, raw 20-byte id)`` of a tree's entries, submodules (gitlinks) left out."""
    entries: list[tuple[bool, bytes]] = []
    at, size = 0, len(data)
    while at < size:
        space = data.find(b" ", at)
        nul = data.find(b"\0", space)
        if space < 0 or nul < 0 or nul + 21 > size:
            raise Unusual("malformed tree")
        mode = data[at:space]
        if mode != _GITLINK:
            entries.append((mode == _DIRECTORY, data[nul + 1:nul + 21]))
        at = nul + 21
    return entries


def reachable(repo: pygit2.Repository, tips: list[str], *, max_objects: int, max_bytes: int,
              ) -> list[tuple[bytes, int, bytes]]:
    """``(20-byte id, type, raw data)`` of every object reachable from ``tips``, each once.

    Raises ``TooLarge`` as soon as the walk passes ``max_objects`` or ``max_bytes`` of
    object data, ``Unusual`` for a missing or malformed object."""
    seen: set[bytes] = set()
    out: list[tuple[bytes, int, bytes]] = []
    total = 0
    stack: list[tuple[int | None, bytes]] = [(None, bytes.fromhex(t)) for t in tips]
    while stack:
        expected, raw = stack.pop()
        if raw in seen:
            continue
        seen.add(raw)
        try:
            kind, data = repo.odb.read(pygit2.Oid(raw=raw))
        except KeyError:
            raise Unusual(f"missing object {raw.hex()}") from None
        if expected is not None and kind != expected:
            raise Unusual(f"object {raw.hex()} has an unexpected type")
        total += len(data)
        out.append((raw, kind, data))
        if len(out) > max_objects or total > max_bytes:
            raise TooLarge()
        if kind == COMMIT:
            links = _commit_links(data)
            stack.append((TREE, bytes.fromhex(links[0].decode("ascii"))))
            stack.extend((COMMIT, bytes.fromhex(p.decode("ascii"))) for p in links[1:])
        elif kind == TREE:
            stack.extend((TREE if is_tree else BLOB, oid) for is_tree, oid in _tree_entries(data))
        elif kind == TAG:
            stack.append((None, bytes.fromhex(_tag_target(data))))
        elif kind != BLOB:
            raise Unusual(f"object {raw.hex()} of type {kind}")
    return out
