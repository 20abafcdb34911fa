"""Recursive tree listing with sizes: ``git ls-tree -r -l -z`` of a tree id, paginated.

The tree id is a checked 40-hex hash. The whole listing is read (bounded by ``MAX_OUTPUT``,
about a million entries) and one page returned; ``has_more`` says whether more follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from artifactd.errors import Code, NotFound, ValidationError
from artifactd.services.reads import gitread
from artifactd.services.reads.content import RepoReader

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_OUTPUT = 128 << 20


@dataclass(frozen=True)
class WalkEntry:
    path: str
    mode: str
    type: str
    sha: str
    size: int | None


@dataclass(frozen=True)
class WalkPage:
    sha: str
    entries: list[WalkEntry]
    offset: int
    limit: int
    has_more: bool
    truncated: bool


async def walk(reader: RepoReader, sha: str, offset: int, limit: int) -> WalkPage:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}", pointer="/limit")
    if offset < 0:
        raise ValidationError("offset must not be negative", pointer="/offset")
    # A missing object is the same 404 as tree/:hash; a commit id lists the commit's tree.
    sha = (await reader.tree(sha)).sha
    out = await gitread.run(reader.backend, reader.git_dir, [
        "ls-tree", "-r", "-l", "-z", "--full-tree", "--end-of-options", sha,
    ], max_bytes=MAX_OUTPUT, ok_codes=(0, 128))
    if out.returncode == 128 and not out.truncated:
        raise NotFound(f"Tree {sha} not found", code=Code.OBJECT_NOT_FOUND)
    # Drop the last piece: the empty one after the final NUL, or a record cut by the limit.
    records = out.data.split(b"\0")[:-1]
    entries = []
    for record in records[offset:offset + limit]:
        meta, _, path = record.partition(b"\t")
        mode, kind, object_id, size = meta.decode().split()
        entries.append(WalkEntry(path.decode("utf-8", "replace"), mode, kind, object_id,
                                 int(size) if size.isdigit() else None))
    return WalkPage(sha, entries, offset, limit, len(records) > offset + limit, out.truncated)
