"""The backup format: what a backup holds and how its names are checked.

A backup is a set of named objects in a directory or under a bucket prefix::

    manifest.json             written last: format, schema revision, counts, the index's checksum
    files.jsonl               the index: one {"path", "sha256", "size"} per file of the backup
    blobs/<sha[0:2]>/<sha256> every file's bytes, named by their SHA-256 (stored once)

An index path is *logical*: ``metadata/<table>.jsonl`` (one table's rows) or
``repos/<id[0:2]>/<id[2:4]>/<id>.git/<file>`` (a repo's file, as the data dir laid it out
before its one-level shards and dense layout; restore lays it out as the store does now),
or, for the ``s3`` repo store, ``packs/<hash>.pack`` / ``packs/<hash>.idx`` (a pack object,
named by its bucket key; the refs and pack lists are rows of the ``s3_*`` tables).
Content addressing stores a pack shared by a parent and its forks once, and lets ``restore``
hard-link them again. A backup without ``manifest.json`` is an unfinished one.

Restore trusts nothing it reads: every index path is matched against the two shapes above
(fixed words, hex ids, and file names of the characters git uses) before it can reach a
filesystem path, and every blob is hashed before anything is written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artifactd.errors import ArtifactdError, Code

FORMAT = "artifactd-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "files.jsonl"
REPO_STORE_LOCAL = "local"
REPO_STORE_S3 = "s3"
REPO_STORES = frozenset((REPO_STORE_LOCAL, REPO_STORE_S3))

_SHA256 = re.compile(r"[0-9a-f]{64}")
_TABLE_PATH = re.compile(r"metadata/(?P<table>[a-z_][a-z0-9_]{0,62})\.jsonl")
_REPO_PATH = re.compile(
    r"repos/(?P<a>[0-9a-f]{2})/(?P<b>[0-9a-f]{2})/(?P<id>[0-9a-f]{32})\.git/"
    r"(?P<rel>[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*)"
)
# A pack object of the ``s3`` backend, named as its bucket key (the pack's hash, as git names it).
_PACK_PATH = re.compile(r"packs/(?P<name>[0-9a-f]{40}|[0-9a-f]{64})\.(?:pack|idx)")


class BackupError(ArtifactdError):
    """A backup or restore that cannot go on; ``code`` says why (docs/errors.md)."""

    default_code = Code.BACKUP_CORRUPT


def blob_name(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}"


def table_path(table: str) -> str:
    return f"metadata/{table}.jsonl"


def pack_path(key: str) -> str:
    """A bucket pack object's index path: its key as the ``s3`` store names it."""
    if not _PACK_PATH.fullmatch(key):
        raise ValueError(f"not a pack key: {key!r}")
    return key


def repo_path(repo_id: str, relative: str) -> str:
    return f"repos/{repo_id[:2]}/{repo_id[2:4]}/{repo_id}.git/{relative}"


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int

    def line(self) -> str:
        return json.dumps({"path": self.path, "sha256": self.sha256, "size": self.size},
                          separators=(",", ":")) + "\n"

    @property
    def table(self) -> str | None:
        match = _TABLE_PATH.fullmatch(self.path)
        return match["table"] if match else None

    @property
    def pack_key(self) -> str | None:
        """The bucket key of an ``s3`` pack object (the same as its path), else None."""
        return self.path if _PACK_PATH.fullmatch(self.path) else None

    @property
    def repo(self) -> tuple[str, str] | None:
        """(repo id, path inside its directory) of a repo file."""
        match = _REPO_PATH.fullmatch(self.path)
        return (match["id"], match["rel"]) if match else None


def parse_entry(raw: str, number: int) -> FileEntry:
    """One index line, checked; ``BackupError`` naming the line otherwise."""
    try:
        record = json.loads(raw)
        entry = FileEntry(str(record["path"]), str(record["sha256"]), int(record["size"]))
    except (ValueError, KeyError, TypeError):
        raise BackupError(f"{INDEX} line {number} is not an index entry") from None
    if not _SHA256.fullmatch(entry.sha256) or entry.size < 0:
        raise BackupError(f"{INDEX} line {number}: bad checksum or size for {entry.path!r}")
    repo = _REPO_PATH.fullmatch(entry.path)
    if repo:
        parts = repo["rel"].split("/")
        if repo["a"] != repo["id"][:2] or repo["b"] != repo["id"][2:4] or any(
                part in {".", ".."} for part in parts) or parts[0] not in {
                "HEAD", "packed-refs", "refs", "objects", "shallow"}:
            raise BackupError(f"{INDEX} line {number}: {entry.path!r} is not a repo file path")
    elif not _TABLE_PATH.fullmatch(entry.path) and not _PACK_PATH.fullmatch(entry.path):
        raise BackupError(f"{INDEX} line {number}: {entry.path!r} is not a path of a backup")
    return entry


@dataclass(frozen=True)
class Manifest:
    artifactd_version: str
    created_at: str
    schema_revision: str
    source_database: str
    repo_store: str
    index_sha256: str
    index_size: int
    tables: dict[str, int]
    repos: int
    files: int
    bytes: int

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "artifactd_version": self.artifactd_version, "created_at": self.created_at,
            "schema_revision": self.schema_revision, "source_database": self.source_database,
            "repo_store": self.repo_store,
            "index": {"name": INDEX, "sha256": self.index_sha256, "size": self.index_size},
            "tables": self.tables, "repos": self.repos, "files": self.files, "bytes": self.bytes,
        }, indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise BackupError(f"{MANIFEST} is not an artifactd backup manifest")
            if raw.get("format_version") != FORMAT_VERSION:
                raise BackupError(
                    f"{MANIFEST} has format version {raw.get('format_version')!r}; this release "
                    f"reads version {FORMAT_VERSION}: restore with the release that wrote it",
                    code=Code.BACKUP_SCHEMA_NEWER)
            index = raw["index"]
            manifest = cls(
                artifactd_version=str(raw["artifactd_version"]), created_at=str(raw["created_at"]),
                schema_revision=str(raw["schema_revision"]),
                source_database=str(raw["source_database"]), repo_store=str(raw["repo_store"]),
                index_sha256=str(index["sha256"]), index_size=int(index["size"]),
                tables={str(k): int(v) for k, v in dict(raw["tables"]).items()},
                repos=int(raw["repos"]), files=int(raw["files"]), bytes=int(raw["bytes"]),
            )
        except BackupError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BackupError(f"{MANIFEST} is truncated or malformed") from None
        if manifest.repo_store not in REPO_STORES:
            raise BackupError(f"{MANIFEST} names an unknown repo store {manifest.repo_store!r}")
        if not _SHA256.fullmatch(manifest.index_sha256):
            raise BackupError(f"{MANIFEST} has no valid checksum for {INDEX}")
        return manifest
