"""A branch's tip commit and its root tree, without starting git: ArtifactFS's root read.

A root-first mount (``fs/rootfirst.py``) lists the branch's root before any clone: after
``ls-refs`` it sends one protocol-v2 ``fetch`` of the tip with ``deepen 1`` and ``filter
tree:1``, which upload-pack answers with a pack of two objects (the commit and its root
tree) after starting itself and its pack-objects: most of that request's cost, and on the
path to the mount's first ``ls``. Exactly that request is answered here from the worker's
object reader:

- capabilities ``agent`` and ``object-format=sha1`` only; arguments: one ``want`` that is
  a ref tip (what ``ls-refs`` gave the client; upload-pack allows no other commit under
  ``allowReachableSHA1InWant`` without a walk), ``deepen 1``, ``filter tree:1``, ``done``,
  and any of ``no-progress``, ``ofs-delta``, ``thin-pack``;
- the answer is upload-pack's: a ``shallow-info`` section naming the tip (at depth 1 git
  marks the wanted commit shallow, parents or not), then a ``packfile`` section holding the
  commit and its root tree whole on side band 1, then a flush.

Anything else (haves, another depth or filter, several wants, a want that is not a ref tip
or not a commit, a shallow repo, a read that fails) goes to upload-pack unchanged.
``artifactd_git_in_process_total{command="root-fetch"}`` counts the requests served here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pygit2

from artifactd.observability import GIT_IN_PROCESS
from artifactd.services.backend import Backend
from artifactd.services.git.blob_fetch import packets, response
from artifactd.services.git.pktline import encode, encode_line
from artifactd.services.git.small_clone import pack
from artifactd.services.reads import content
from artifactd.storage import clonesource
from artifactd.storage.objectreader import ReadFailed

DELIM = b"0001"
_CAPABILITIES = re.compile(rb"agent=[\x21-\x7e]{1,200}|object-format=sha1")
_WANT = re.compile(rb"want ([0-9a-f]{40})")
_FLAGS = frozenset({b"no-progress", b"ofs-delta", b"thin-pack"})
_REQUIRED = (b"deepen 1", b"filter tree:1", b"done")


def wanted_tip(request: bytes) -> str | None:
    """The one commit a root read wants, if ``request`` is exactly that fetch; else ``None``."""
    parts = packets(request)
    if not parts or parts[0] != b"command=fetch" or parts[-1] != b"" or parts.count(None) != 1:
        return None
    delim = parts.index(None)
    capabilities, arguments = parts[1:delim], parts[delim + 1:-1]
    if not all(c is not None and _CAPABILITIES.fullmatch(c) for c in capabilities):
        return None
    wants: list[str] = []
    required: list[bytes] = []
    for argument in arguments:
        if argument is None or argument == b"":
            return None  # a second flush: not the one request we answer
        if argument in _FLAGS:
            continue
        if argument in _REQUIRED:
            required.append(argument)
            continue
        match = _WANT.fullmatch(argument)
        if match is None:
            return None
        wants.append(match[1].decode())
    if len(wants) != 1 or sorted(required) != sorted(_REQUIRED):
        return None
    return wants[0]


def _root_objects(repo: pygit2.Repository, tip: str) -> list[tuple[bytes, int, bytes]]:
    refs = clonesource.list_refs(repo)
    tips = {ref.oid for ref in refs.refs} | ({refs.head_oid} if refs.head_oid else set())
    if tip not in tips:
        raise clonesource.Unusual("a want that is not a ref tip")
    kind, commit = repo.odb.read(pygit2.Oid(hex=tip))
    if kind != clonesource.COMMIT or not commit.startswith(b"tree ") or commit[45:46] != b"\n":
        raise clonesource.Unusual("not a commit")
    tree_id = bytes.fromhex(commit[5:45].decode("ascii"))
    kind, tree = repo.odb.read(pygit2.Oid(raw=tree_id))
    if kind != clonesource.TREE:
        raise clonesource.Unusual("the commit's tree is not a tree")
    return [(bytes.fromhex(tip), clonesource.COMMIT, commit), (tree_id, clonesource.TREE, tree)]


_GIVE_UP = (clonesource.Unusual, ReadFailed, pygit2.GitError, KeyError, ValueError, OSError)


def serve(backend: Backend, git_dir: Path, request: bytes) -> bytes | None:
    """The whole response to ``request`` if it is a root read's fetch; else ``None``."""
    tip = wanted_tip(request)
    if tip is None or (git_dir / "shallow").exists():
        return None
    try:
        objects = content.pool(backend).use(git_dir, lambda repo: _root_objects(repo, tip))
    except _GIVE_UP:
        return None  # upload-pack will say what is wrong
    GIT_IN_PROCESS.labels("root-fetch").inc()
    # As upload-pack writes them: "shallow-info" with a newline, each "shallow" line without.
    return encode_line("shallow-info") + encode(f"shallow {tip}".encode()) + DELIM + response(pack(objects))
