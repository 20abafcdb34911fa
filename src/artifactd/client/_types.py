"""Typed results of the SDK: frozen dataclasses built from the API's JSON.

Secrets (``CreateRepoResult.token``, ``CreateTokenResult.plaintext``) are excluded from
``repr`` so that logging a result never logs a credential. ``data`` keeps the server's JSON
object as received, for fields a newer server adds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

Scope = Literal["read", "write"]
TokenState = Literal["active", "expired", "revoked"]
RepoStatus = Literal["ready", "importing", "forking", "failed"]

_EXPIRES = "?expires="


def token_secret(token: str) -> str:
    """The token without its ``?expires=`` suffix: what goes in a Basic-auth password slot.

    The shell form in the spec is ``${ARTIFACTS_TOKEN%%\\?expires=*}``.
    """
    return token.split(_EXPIRES, 1)[0]


def token_expires_at(token: str) -> datetime | None:
    """The expiry a repo token carries in its ``?expires=<unix seconds>`` suffix."""
    _, sep, suffix = token.partition(_EXPIRES)
    if not sep or not suffix.isdigit():
        return None
    return datetime.fromtimestamp(int(suffix), tz=UTC)


def authenticated_remote(remote: str, token: str) -> str:
    """The spec's self-contained remote: ``https://x:<token secret>@host/git/...``.

    Any username works; the server reads only the password. Use it for short-lived commands:
    whoever sees the URL can use the token until it expires.
    """
    parts = urlsplit(remote)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("remote must be an http(s) URL")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"x:{token_secret(token)}@{host}", parts.path, parts.query, ""))


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: datetime | None) -> str | None:
    """The API's own rendering (``2026-11-21T21:29:00.123456Z``), for JSON output."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _str(data: Mapping[str, Any], key: str) -> str:
    return str(data.get(key) or "")


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else str(value)


def _int(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass(frozen=True)
class RepoInfo:
    """A repo's metadata (the spec's ``RepoWithRemote`` plus ``status``, ``status_reason``, ``size``)."""

    id: str
    name: str
    namespace: str
    description: str | None
    default_branch: str
    created_at: datetime | None
    updated_at: datetime | None
    last_push_at: datetime | None
    source: str | None
    read_only: bool
    remote: str
    status: str
    status_reason: str | None
    size: int
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], namespace: str) -> RepoInfo:
        return cls(**_repo_fields(data, namespace))

    def to_json(self) -> dict[str, Any]:
        return {**self.data, "namespace": self.namespace}


def _repo_fields(data: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "id": _str(data, "id"),
        "name": _str(data, "name"),
        "namespace": namespace,
        "description": _opt_str(data, "description"),
        "default_branch": _str(data, "default_branch"),
        "created_at": parse_time(data.get("created_at")),
        "updated_at": parse_time(data.get("updated_at")),
        "last_push_at": parse_time(data.get("last_push_at")),
        "source": _opt_str(data, "source"),
        "read_only": bool(data.get("read_only")),
        "remote": _str(data, "remote"),
        "status": _str(data, "status") or "ready",
        "status_reason": _opt_str(data, "status_reason"),
        "size": _int(data, "size"),
        "data": dict(data),
    }


@dataclass(frozen=True)
class RepoPage:
    """One page of ``list()``; ``cursor`` is ``None`` on the last page. Iterating yields repos.

    ``total`` (the binding's ``page.total``) counts the matching repos across all pages; it is
    ``None`` when the server does not say (a server without ``result_info.total_count``).
    """

    repos: list[RepoInfo]
    cursor: str | None
    per_page: int
    total: int | None = None

    def __iter__(self) -> Iterator[RepoInfo]:
        return iter(self.repos)

    def __len__(self) -> int:
        return len(self.repos)


@dataclass(frozen=True)
class CreateRepoResult:
    """What ``create``, ``import_repo`` and ``fork`` return: the remote and an initial write token.

    ``objects`` is set for forks (the number of objects the fork holds).
    """

    id: str
    name: str
    namespace: str
    description: str | None
    default_branch: str
    remote: str
    token: str = field(repr=False)
    objects: int | None = None

    @property
    def expires_at(self) -> datetime | None:
        return token_expires_at(self.token)

    @property
    def token_expires_at(self) -> datetime | None:
        """The binding's ``tokenExpiresAt``: when the initial ``token`` expires."""
        return self.expires_at

    @classmethod
    def from_json(cls, data: Mapping[str, Any], namespace: str) -> CreateRepoResult:
        objects = data.get("objects")
        return cls(
            id=_str(data, "id"), name=_str(data, "name"), namespace=namespace,
            description=_opt_str(data, "description"),
            default_branch=_str(data, "default_branch"), remote=_str(data, "remote"),
            token=_str(data, "token"),
            objects=objects if isinstance(objects, int) and not isinstance(objects, bool) else None,
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id, "name": self.name, "namespace": self.namespace,
            "description": self.description, "default_branch": self.default_branch,
            "remote": self.remote, "token": self.token,
            "expires_at": format_time(self.expires_at),
        }
        if self.objects is not None:
            body["objects"] = self.objects
        return body


@dataclass(frozen=True)
class CreateTokenResult:
    """A freshly minted repo token. ``plaintext`` is the git credential; it is shown once."""

    id: str
    scope: str
    expires_at: datetime | None
    plaintext: str = field(repr=False)

    @property
    def secret(self) -> str:
        return token_secret(self.plaintext)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CreateTokenResult:
        return cls(
            id=_str(data, "id"), scope=_str(data, "scope"),
            expires_at=parse_time(data.get("expires_at")), plaintext=_str(data, "plaintext"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "plaintext": self.plaintext, "scope": self.scope,
            "expires_at": format_time(self.expires_at),
        }


@dataclass(frozen=True)
class TokenInfo:
    """A repo token as listed: never its secret."""

    id: str
    scope: str
    state: str
    created_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenInfo:
        return cls(
            id=_str(data, "id"), scope=_str(data, "scope"), state=_str(data, "state"),
            created_at=parse_time(data.get("created_at")),
            expires_at=parse_time(data.get("expires_at")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "scope": self.scope, "state": self.state,
            "created_at": format_time(self.created_at), "expires_at": format_time(self.expires_at),
        }


@dataclass(frozen=True)
class TokenList:
    """``list_tokens()``: one page of tokens and the total across pages."""

    tokens: list[TokenInfo]
    total: int
    page: int
    per_page: int
    total_pages: int

    def __iter__(self) -> Iterator[TokenInfo]:
        return iter(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class Person:
    """A commit's author or committer; ``date`` keeps the identity's own UTC offset."""

    name: str
    email: str
    date: datetime | None

    @classmethod
    def from_json(cls, data: object) -> Person:
        body = data if isinstance(data, Mapping) else {}
        return cls(name=_str(body, "name"), email=_str(body, "email"), date=parse_time(body.get("date")))


@dataclass(frozen=True)
class Commit:
    sha: str
    tree: str
    parents: list[str]
    author: Person
    committer: Person
    message: str
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def subject(self) -> str:
        """The first line of the message."""
        return self.message.split("\n", 1)[0]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Commit:
        parents = data.get("parents")
        return cls(
            sha=_str(data, "sha"), tree=_str(data, "tree"),
            parents=[str(p) for p in parents] if isinstance(parents, list) else [],
            author=Person.from_json(data.get("author")),
            committer=Person.from_json(data.get("committer")),
            message=_str(data, "message"), data=dict(data),
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.data)


@dataclass(frozen=True)
class LogPage:
    """One page of history, newest first; ``has_more`` says whether ``offset + limit`` has more."""

    commits: list[Commit]
    offset: int
    limit: int
    has_more: bool

    def __iter__(self) -> Iterator[Commit]:
        return iter(self.commits)

    def __len__(self) -> int:
        return len(self.commits)


@dataclass(frozen=True)
class TreeEntry:
    """``type`` is ``blob``, ``tree`` or ``commit`` (a submodule); ``size`` is set for blobs."""

    name: str
    mode: str
    type: str
    sha: str
    size: int | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TreeEntry:
        size = data.get("size")
        return cls(
            name=_str(data, "name"), mode=_str(data, "mode"), type=_str(data, "type"),
            sha=_str(data, "sha"),
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        )


@dataclass(frozen=True)
class Tree:
    sha: str
    entries: list[TreeEntry]

    def __iter__(self) -> Iterator[TreeEntry]:
        return iter(self.entries)

    def __getitem__(self, name: str) -> TreeEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tree:
        entries = data.get("entries")
        return cls(
            sha=_str(data, "sha"),
            entries=[TreeEntry.from_json(e) for e in entries if isinstance(e, Mapping)]
            if isinstance(entries, list) else [],
        )
