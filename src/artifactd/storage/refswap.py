"""A push's ref updates in process: compare-and-swap on each ref's old value, under git's locks.

Each update is made in a libgit2 ref transaction: git's lock file protocol (``<ref>.lock``
created exclusively, the value read once the lock is held, the lock renamed over the ref; a
deletion also rewrites ``packed-refs`` under ``packed-refs.lock``), which is what
receive-pack's own ref transaction does. A push through C git, a REST commit (``objwrite``)
and an in-process push racing on one ref thus exclude each other: one wins, the others find
the ref held or moved and fail. A held lock is retried for ``LOCK_TIMEOUT``, as git retries
(``core.filesRefLockTimeout``).

``atomic`` takes every lock, checks every old value, then writes them all, or none; otherwise
each ref stands alone. The answers are receive-pack's: ``None`` (``ok``), or its ``ng``
reason with the ``error:`` line git prints for it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import pygit2

ZERO = "0" * 40
LOCK_TIMEOUT = 0.1  # seconds (git's filesRefLockTimeout default)
FAILED = "failed to update ref"
ATOMIC_FAILED = "atomic transaction failed"


@dataclass(frozen=True)
class Update:
    old: str
    new: str
    ref: str


@dataclass(frozen=True)
class Outcome:
    ref: str
    refused: str | None = None  # receive-pack's ng reason; None: ok
    error: str = ""  # the ``error: ...`` line git sends the client for it


class _Held(Exception):
    """A lock file of the transaction is held by someone else."""


class _Stale(Exception):
    def __init__(self, ref: str, message: str):
        super().__init__(message)
        self.ref = ref


def apply(repo: pygit2.Repository, updates: Sequence[Update], *, atomic: bool) -> list[Outcome]:
    """Make ``updates`` (in their order); one outcome each."""
    if atomic:
        try:
            _retrying(repo, updates)
        except _Stale as stale:
            return [Outcome(u.ref, ATOMIC_FAILED, stale.args[0] if u.ref == stale.ref else "")
                    for u in updates]
        return [Outcome(u.ref) for u in updates]
    outcomes = []
    for update in updates:
        try:
            _retrying(repo, [update])
            outcomes.append(Outcome(update.ref))
        except _Stale as stale:
            outcomes.append(Outcome(update.ref, FAILED, stale.args[0]))
    return outcomes


def _retrying(repo: pygit2.Repository, updates: Sequence[Update]) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT
    pause = 0.001
    while True:
        try:
            _once(repo, updates)
            return
        except _Held as held:
            if time.monotonic() >= deadline:
                raise _Stale(updates[0].ref if len(updates) == 1 else held.args[1],
                             held.args[0]) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.016)


def _once(repo: pygit2.Repository, updates: Sequence[Update]) -> None:
    try:
        _locked_swap(repo, updates)
    except pygit2.GitError as exc:  # the commit: renaming a lock over its ref failed
        raise _Stale(updates[0].ref, f"cannot update ref '{updates[0].ref}': {exc}") from None


def _locked_swap(repo: pygit2.Repository, updates: Sequence[Update]) -> None:
    with repo.transaction() as txn:
        for update in updates:
            try:
                txn.lock_ref(update.ref)
            except (pygit2.GitError, ValueError) as exc:  # held, or a file/directory clash
                raise _Held(f"cannot lock ref '{update.ref}': {exc}", update.ref) from None
        for update in updates:
            found = repo.references.get(update.ref)
            current = str(found.target) if found is not None else None
            if update.old == ZERO:
                if current is not None:
                    raise _Stale(update.ref, f"cannot lock ref '{update.ref}': reference already "
                                             "exists")
            elif current is None:
                raise _Stale(update.ref, f"cannot lock ref '{update.ref}': unable to resolve "
                                         f"reference '{update.ref}'")
            elif current != update.old:
                raise _Stale(update.ref, f"cannot lock ref '{update.ref}': is at {current} but "
                                         f"expected {update.old}")
        try:
            for update in updates:
                if update.new == ZERO:
                    txn.remove(update.ref)
                else:
                    txn.set_target(update.ref, pygit2.Oid(hex=update.new), message="push")
        except (pygit2.GitError, ValueError) as exc:
            raise _Stale(updates[0].ref, f"cannot update ref '{updates[0].ref}': {exc}") from None
    # Leaving the block commits the transaction (renames each lock over its ref).
