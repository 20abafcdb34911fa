"""Rate limits and storage limits: the spec's "Limits" page, enforced in one place.

Rate limits use fixed windows aligned to the window length (e.g. 10 s windows starting at
multiples of 10 s since the epoch): within one window exactly ``count`` requests per key are
allowed, the rest get 429 with ``Retry-After`` = seconds until the window ends. Keys are
``ctl:<account>:<namespace>`` for the control plane (the spec: per namespace) and
``git:<repo id>`` for git requests (per repo). Counters are shared by every worker (see
storage/ratecounter.py).
"""

from __future__ import annotations

import math
from typing import Protocol

from artifactd.errors import Code, RateLimited, StorageLimitExceeded
from artifactd.observability import RATE_LIMITED, STORAGE_REFUSED
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.storage.metadata import RepoRow
from artifactd.storage.ratecounter import DatabaseCounter, SharedMemoryCounter


class Counter(Protocol):
    def hit(self, key: str, window_start: int) -> int: ...

    def close(self) -> None: ...


def counter(backend: Backend) -> Counter:
    existing = backend.extras.get("rate_counter")
    if existing is None:
        if backend.meta.engine.dialect.name == "sqlite":
            existing = SharedMemoryCounter(backend.settings.data_path / "tmp" / "ratelimit.shm")
        else:
            existing = DatabaseCounter(backend.meta.engine)
        backend.extras["rate_counter"] = existing
    return existing  # type: ignore[return-value]


def check_rate(backend: Backend, kind: str, key: str) -> None:
    """Count one request against ``key``; raise ``RateLimited`` past the limit."""
    limit, window_s = backend.settings.control_rate if kind == "control" else backend.settings.git_rate
    window_us = int(window_s * 1_000_000)
    now = now_us()
    window_start = now - now % window_us
    used = counter(backend).hit(f"{kind}:{key}", window_start)
    if used > limit:
        RATE_LIMITED.labels(kind).inc()
        retry_after = max(1, math.ceil((window_start + window_us - now) / 1_000_000))
        raise RateLimited(
            f"Rate limit exceeded: {limit} {'control-plane' if kind == 'control' else 'git'} "
            f"requests per {window_s:g}s; retry in {retry_after}s",
            retry_after=retry_after,
        )


def check_storage(backend: Backend, repo: RepoRow, incoming_bytes: int) -> None:
    """Refuse an operation that would take the repo or its account past its storage limit.

    A pre-check against the running totals (one row each); see ``remaining_bytes``.
    """
    settings = backend.settings
    repo_used = repo.size_bytes + repo.reserved_bytes
    if repo_used + incoming_bytes > settings.max_repo_bytes:
        STORAGE_REFUSED.inc()
        raise StorageLimitExceeded(
            f"Storage limit reached: repo {repo.namespace}/{repo.name} would use "
            f"{repo_used + incoming_bytes} bytes, limit {settings.max_repo_bytes}",
            code=Code.STORAGE_LIMIT,
        )
    account_used = backend.meta.account_size(repo.account_id)
    if account_used + incoming_bytes > settings.max_account_bytes:
        STORAGE_REFUSED.inc()
        raise StorageLimitExceeded(
            f"Storage limit reached: account would use {account_used + incoming_bytes} bytes, "
            f"limit {settings.max_account_bytes}",
            code=Code.STORAGE_LIMIT,
        )


def remaining_bytes(backend: Backend, repo: RepoRow) -> int:
    """How many more bytes of objects this repo may store (repo and account limits).

    Both totals include bytes reserved by pushes in flight. This is a first, cheap filter
    (git refuses a larger pack while receiving it); the exact check is the reservation a
    push makes from its pre-receive hook (services/git/push_guard.py), and the conditional
    update a fork or an import makes when it records its size.
    """
    settings = backend.settings
    account_left = settings.max_account_bytes - backend.meta.account_size(repo.account_id)
    repo_left = settings.max_repo_bytes - repo.size_bytes - repo.reserved_bytes
    return max(0, min(repo_left, account_left))


# A push body is the command section (a few hundred bytes per ref) plus the pack; this much
# slack keeps a declared length from being refused for its commands alone.
PUSH_COMMAND_SLACK = 1 << 20


def account_limit_error(backend: Backend, account_id: str, incoming_bytes: int) -> StorageLimitExceeded:
    """The error for a fork or import refused by the account limit when it recorded its size."""
    STORAGE_REFUSED.inc()
    used = backend.meta.account_size(account_id)
    return StorageLimitExceeded(
        f"Storage limit reached: account would use {used + incoming_bytes} bytes, "
        f"limit {backend.settings.max_account_bytes}",
        code=Code.STORAGE_LIMIT,
    )


def admit_git(backend: Backend, repo: RepoRow, push: bool, declared_bytes: int | None) -> int | None:
    """Rate-limit a git request and, for a push, return the pack bytes it may still add.

    A push whose declared body (``Content-Length``) is already past what the repo and its
    account may still store is refused here, before a byte is read; otherwise receive-pack
    gets the remainder as ``receive.maxInputSize`` and refuses a larger pack itself, before
    any ref moves.
    """
    check_rate(backend, "git", repo.id)
    if not push:
        return None
    left = remaining_bytes(backend, repo)
    if declared_bytes is not None and declared_bytes > left + PUSH_COMMAND_SLACK:
        STORAGE_REFUSED.inc()
        raise StorageLimitExceeded(
            f"Storage limit reached: this push sends {declared_bytes} bytes and repo "
            f"{repo.namespace}/{repo.name} may store {left} more",
            code=Code.STORAGE_LIMIT,
        )
    return left
