"""Writes without a git client, for the SDK: request building and typed results (no I/O).

``Put``, ``Delete`` and ``Move`` build a commit's changes (``Put`` with ``bytes`` sends
base64); the calls are shared by the sync and async repo handles.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from artifactd.models import (
    CommitRequest,
    CreateBranchRequest,
    MergeRequest,
    NoteRequest,
    UpdateRefRequest,
)

from ._core import Call, Routes, _parse, build_body, envelope, unexpected


@dataclass(frozen=True)
class Put:
    path: str
    content: str | bytes
    mode: str = "100644"

    def to_json(self) -> dict[str, Any]:
        if isinstance(self.content, bytes):
            return {"op": "put", "path": self.path, "mode": self.mode, "encoding": "base64",
                    "content": base64.b64encode(self.content).decode("ascii")}
        return {"op": "put", "path": self.path, "mode": self.mode, "content": self.content}


@dataclass(frozen=True)
class Delete:
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"op": "delete", "path": self.path}


@dataclass(frozen=True)
class Move:
    source: str
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"op": "move", "from": self.source, "path": self.path}


Change = Put | Delete | Move | Mapping[str, Any]


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class CommitResult:
    sha: str
    tree: str
    branch: str
    parents: list[str]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CommitResult:
        parents = data.get("parents")
        return cls(_str(data, "sha"), _str(data, "tree"), _str(data, "branch"),
                   [p for p in parents if isinstance(p, str)] if isinstance(parents, list) else [])


@dataclass(frozen=True)
class RefInfo:
    name: str
    ref: str
    kind: str
    target: str
    object_type: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RefInfo:
        return cls(_str(data, "name"), _str(data, "ref"), _str(data, "kind"),
                   _str(data, "target"), _str(data, "object_type"))


@dataclass(frozen=True)
class RefPage:
    refs: list[RefInfo]
    cursor: str | None


@dataclass(frozen=True)
class MergeConflict:
    path: str
    hunks: list[str]


@dataclass(frozen=True)
class MergeResult:
    mergeable: bool
    sha: str | None
    tree: str | None
    target: str
    head: str
    merge_base: str | None
    fast_forward: bool
    conflicts: list[MergeConflict]
    messages: list[str]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MergeResult:
        conflicts = [MergeConflict(_str(c, "path"), [h for h in c.get("hunks", [])
                                                      if isinstance(h, str)])
                     for c in data.get("conflicts") or [] if isinstance(c, dict)]
        return cls(
            mergeable=data.get("mergeable") is True, sha=data.get("sha") or None,
            tree=data.get("tree") or None, target=_str(data, "target"), head=_str(data, "head"),
            merge_base=data.get("merge_base") or None, fast_forward=data.get("fast_forward") is True,
            conflicts=conflicts,
            messages=[m for m in data.get("messages") or [] if isinstance(m, str)],
        )


@dataclass(frozen=True)
class Note:
    commit: str
    notes_ref: str
    message: str
    note_sha: str
    notes_commit: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Note:
        return cls(_str(data, "commit"), _str(data, "notes_ref"), _str(data, "message"),
                   _str(data, "note_sha"), _str(data, "notes_commit"))


def _person(value: Mapping[str, str] | None) -> dict[str, str] | None:
    return dict(value) if value is not None else None


def commit_files(
    routes: Routes, repo: str, branch: str, message: str, changes: Sequence[Change], *,
    author: Mapping[str, str] | None, committer: Mapping[str, str] | None,
    expected_head: str | None, base: str | None,
) -> Call[CommitResult]:
    body = build_body(
        CommitRequest, branch=branch, message=message, author=_person(author),
        committer=_person(committer), expected_head=expected_head, base=base,
        changes=[c.to_json() if isinstance(c, Put | Delete | Move) else dict(c) for c in changes],
    )
    # build_body drops None, which is also how "from" of a non-move change is left out
    body["changes"] = [{("from" if k == "from_" else k): v for k, v in c.items()}
                       for c in body["changes"]]
    return Call("POST", routes.repo_path(repo, "commits"), _parse(CommitResult.from_json),
                body=body)


def _ref_page(response: httpx.Response) -> RefPage:
    body = envelope(response)
    items = body.get("result")
    info = body.get("result_info") or {}
    if not isinstance(items, list) or not isinstance(info, dict):
        raise unexpected(response, "a list of refs")
    cursor = info.get("cursor")
    return RefPage([RefInfo.from_json(item) for item in items if isinstance(item, dict)],
                   cursor if isinstance(cursor, str) and cursor else None)


def list_refs(routes: Routes, repo: str, *, kind: str | None, per_page: int | None,
              cursor: str | None) -> Call[RefPage]:
    params: dict[str, str | int] = {k: v for k, v in (("kind", kind), ("per_page", per_page),
                                                      ("cursor", cursor)) if v is not None}
    return Call("GET", routes.repo_path(repo, "refs"), _ref_page, params=params)


def create_branch(routes: Routes, repo: str, name: str, target: str) -> Call[RefInfo]:
    body = build_body(CreateBranchRequest, name=name, target=target)
    return Call("POST", routes.repo_path(repo, "branches"), _parse(RefInfo.from_json), body=body)


def move_ref(routes: Routes, repo: str, ref: str, target: str, *, expected: str | None,
             force: bool) -> Call[RefInfo]:
    body = build_body(UpdateRefRequest, ref=ref, target=target, expected=expected, force=force)
    return Call("PATCH", routes.repo_path(repo, "refs"), _parse(RefInfo.from_json), body=body)


def delete_ref(routes: Routes, repo: str, ref: str, *, expected: str | None) -> Call[RefInfo]:
    params: dict[str, str | int] = {"expected": expected} if expected else {}
    path = routes.repo_path(repo, "refs", *[quote(p, safe="") for p in ref.split("/")])
    return Call("DELETE", path, _parse(RefInfo.from_json), params=params)


def merge(routes: Routes, repo: str, head: str, *, target: str | None, strategy: str,
          message: str | None, dry_run: bool, expected_head: str | None) -> Call[MergeResult]:
    body = build_body(MergeRequest, head=head, target=target, strategy=strategy,
                      message=message, dry_run=dry_run, expected_head=expected_head)
    return Call("POST", routes.repo_path(repo, "merge"), _parse(MergeResult.from_json), body=body)


def get_note(routes: Routes, repo: str, commit: str, notes_ref: str | None) -> Call[Note]:
    params: dict[str, str | int] = {"notes_ref": notes_ref} if notes_ref else {}
    return Call("GET", routes.repo_path(repo, "notes", quote(commit, safe="")),
                _parse(Note.from_json), params=params)


def put_note(routes: Routes, repo: str, commit: str, message: str, *, notes_ref: str | None,
             expected: str | None) -> Call[Note]:
    body = build_body(NoteRequest, message=message, notes_ref=notes_ref or "commits",
                      expected=expected)
    return Call("PUT", routes.repo_path(repo, "notes", quote(commit, safe="")),
                _parse(Note.from_json), body=body)


def delete_note(routes: Routes, repo: str, commit: str, notes_ref: str | None) -> Call[Note]:
    params: dict[str, str | int] = {"notes_ref": notes_ref} if notes_ref else {}
    return Call("DELETE", routes.repo_path(repo, "notes", quote(commit, safe="")),
                _parse(Note.from_json), params=params)


__all__ = ["CommitResult", "Delete", "MergeConflict", "MergeResult", "Move", "Note", "Put",
           "RefInfo", "RefPage"]
