"""Typed results and calls of the read helpers: compare, blame, recursive tree, archive.

Kept apart from ``_types``/``_core`` so the sync and async clients share one definition of
each call (``Repo.compare`` and ``AsyncRepo.compare`` send the same ``Call``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from artifactd.client._core import Call, Routes, _object, _parse, _segment, raw_bytes, result
from artifactd.client._core import envelope as _envelope
from artifactd.client._types import Commit, Person, _int, _opt_str, _str

ARCHIVE_FORMATS = ("tar.gz", "zip")


@dataclass(frozen=True)
class ChangedFile:
    path: str
    previous_path: str | None
    status: str  # added, removed, modified, renamed, copied, changed
    additions: int
    deletions: int
    binary: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChangedFile:
        return cls(path=_str(data, "path"), previous_path=_opt_str(data, "previous_path"),
                   status=_str(data, "status"), additions=_int(data, "additions"),
                   deletions=_int(data, "deletions"), binary=data.get("binary") is True)


@dataclass(frozen=True)
class CompareSide:
    repo: str
    ref: str
    sha: str


@dataclass(frozen=True)
class Comparison:
    """``base...head``: what head changed since the merge base."""

    base: CompareSide
    head: CompareSide
    merge_base: str | None
    ahead_by: int
    behind_by: int
    commits: list[Commit]
    files: list[ChangedFile]
    truncated: bool
    commits_truncated: bool
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comparison:
        def side(key: str) -> CompareSide:
            raw = data.get(key)
            body = raw if isinstance(raw, Mapping) else {}
            return CompareSide(_str(body, "repo"), _str(body, "ref"), _str(body, "sha"))

        commits = data.get("commits")
        files = data.get("files")
        return cls(
            base=side("base"), head=side("head"), merge_base=_opt_str(data, "merge_base"),
            ahead_by=_int(data, "ahead_by"), behind_by=_int(data, "behind_by"),
            commits=[Commit.from_json(c) for c in commits if isinstance(c, Mapping)]
            if isinstance(commits, list) else [],
            files=[ChangedFile.from_json(f) for f in files if isinstance(f, Mapping)]
            if isinstance(files, list) else [],
            truncated=data.get("truncated") is True,
            commits_truncated=data.get("commits_truncated") is True, data=dict(data),
        )


@dataclass(frozen=True)
class Patch:
    """The unified diff of a comparison; ``truncated`` when the server cut it."""

    text: str
    truncated: bool


@dataclass(frozen=True)
class BlameRange:
    start: int
    lines: int
    commit: str
    original_start: int
    original_path: str


@dataclass(frozen=True)
class BlameCommit:
    sha: str
    author: Person
    committer: Person
    summary: str


@dataclass(frozen=True)
class Blame:
    sha: str
    path: str
    ranges: list[BlameRange]
    commits: dict[str, BlameCommit]

    def line_commit(self, line: int) -> BlameCommit:
        """The commit that last changed ``line`` (1-based)."""
        for part in self.ranges:
            if part.start <= line < part.start + part.lines:
                return self.commits[part.commit]
        raise KeyError(line)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Blame:
        ranges = data.get("ranges")
        commits = data.get("commits")
        return cls(
            sha=_str(data, "sha"), path=_str(data, "path"),
            ranges=[BlameRange(_int(r, "start"), _int(r, "lines"), _str(r, "commit"),
                               _int(r, "original_start"), _str(r, "original_path"))
                    for r in ranges if isinstance(r, Mapping)] if isinstance(ranges, list) else [],
            commits={_str(c, "sha"): BlameCommit(_str(c, "sha"), Person.from_json(c.get("author")),
                                                 Person.from_json(c.get("committer")),
                                                 _str(c, "summary"))
                     for c in commits if isinstance(c, Mapping)} if isinstance(commits, list) else {},
        )


@dataclass(frozen=True)
class TreeFile:
    path: str
    mode: str
    type: str  # blob or commit (a submodule)
    sha: str
    size: int | None


@dataclass(frozen=True)
class TreeWalkPage:
    """One page of every file below a tree."""

    sha: str
    files: list[TreeFile]
    offset: int
    limit: int
    has_more: bool
    truncated: bool

    def __iter__(self) -> Iterator[TreeFile]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def _walk_page(response: httpx.Response) -> TreeWalkPage:
    body = _envelope(response)
    data = _object(body.get("result"), response)
    info = body.get("result_info") if isinstance(body.get("result_info"), dict) else {}
    entries = data.get("entries")
    files = [TreeFile(_str(e, "path"), _str(e, "mode"), _str(e, "type"), _str(e, "sha"),
                      e.get("size") if isinstance(e.get("size"), int) else None)
             for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []
    assert isinstance(info, dict)
    return TreeWalkPage(_str(data, "sha"), files, _int(info, "offset"),
                        _int(info, "per_page", len(files)), info.get("has_more") is True,
                        data.get("truncated") is True)


def _patch(response: httpx.Response) -> Patch:
    data = raw_bytes(response)
    return Patch(data.decode("utf-8", "replace"),
                 response.headers.get("x-artifactd-truncated") == "true")


def _spec(base: str, head: str) -> str:
    # ':' separates repo and ref and '/' separates ref components: both stay literal.
    return quote(f"{base}...{head}", safe=":/")


def compare(routes: Routes, repo: str, base: str, head: str) -> Call[Comparison]:
    return Call("GET", routes.repo_path(repo, "compare", _spec(base, head)),
                _parse(Comparison.from_json))


def compare_patch(routes: Routes, repo: str, base: str, head: str) -> Call[Patch]:
    call = Call("GET", routes.repo_path(repo, "compare", _spec(base, head)), _patch)
    return Call(call.method, call.path, call.parse, params={"format": "diff"})


def blame(routes: Routes, repo: str, path: str, ref: str | None) -> Call[Blame]:
    params: dict[str, str | int] = {"path": path}
    if ref is not None:
        params["ref"] = ref
    return Call("GET", routes.repo_path(repo, "blame"), _parse(Blame.from_json), params=params)


def walk(routes: Routes, repo: str, sha: str, limit: int | None, offset: int | None
         ) -> Call[TreeWalkPage]:
    params: dict[str, str | int] = {"recursive": "true"}
    if limit is not None:
        params["limit"] = limit
    if offset is not None:
        params["offset"] = offset
    return Call("GET", routes.repo_path(repo, "tree", _segment(sha)), _walk_page, params=params)


def archive(routes: Routes, repo: str, ref: str, fmt: str) -> Call[bytes]:
    if fmt not in ARCHIVE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(ARCHIVE_FORMATS)}")
    return Call("GET", routes.repo_path(repo, "archive", quote(f"{ref}.{fmt}", safe="/")),
                raw_bytes)


__all__ = [
    "Blame",
    "BlameCommit",
    "BlameRange",
    "ChangedFile",
    "CompareSide",
    "Comparison",
    "Patch",
    "TreeFile",
    "TreeWalkPage",
    "raw_bytes",
    "result",
]
