"""The admission every REST write passes, the same a push passes (``git_access``, ``limits``).

- the caller's API token needs edit permission (checked by the route, ``endpoint(edit=True)``);
- the repo must be ready and not read-only;
- the repo's git rate counts the write like a push;
- storage limits: the bytes the write adds are checked before anything is written;
- afterwards the repo's size and last push are recorded through the same metadata call the
  push path uses, and an analytics ``push`` event is emitted (``record_write``: the one place
  to re-point when push accounting changes).

On the ``s3`` store (``remote``) every new object of a write goes to the write's quarantine
(the cache's objects are read as alternates), and ``move_refs`` makes them one pack, stores it
in the bucket and compares-and-swaps the refs in SQL, as a push does: nothing is visible,
through any node, before the pack is in the bucket, and a write that fails leaves nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from artifactd.errors import Code, PermissionDenied
from artifactd.services import limits
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import events
from artifactd.services.repos import repos
from artifactd.storage.gitwrite import ZERO, GitWriter
from artifactd.storage.metadata import RepoRow
from artifactd.storage.objwrite import ObjectWriter


@dataclass(frozen=True)
class WriteTarget:
    repo: RepoRow
    writer: GitWriter
    started_us: int
    remote: bool = False  # the s3 store: objects quarantined, refs moved by ``move_refs``
    stored: list[int] = field(default_factory=list)  # s3: bytes of the packs it listed


def readable(backend: Backend, account_id: str, namespace: str, name: str) -> RepoRow:
    repo = repos.get_repo(backend, account_id, namespace, name)
    repos.require_ready(repo)
    limits.check_rate(backend, "git", repo.id)
    return repo


def open_repo(backend: Backend, repo: RepoRow) -> GitWriter:
    git_dir = backend.repos.ensure(repo.id, repo.default_branch)
    return GitWriter(backend.git, git_dir, backend.settings.data_path / "tmp")


@contextmanager
def admit(backend: Backend, account_id: str, namespace: str, name: str, *,
          write: bool = True) -> Iterator[WriteTarget]:
    """A writable repo and a private work area under ``tmp/`` (made on first use) removed
    afterwards.

    ``write=False`` (a dry run): the repo may be read-only, nothing will be written."""
    started = now_us()
    repo = readable(backend, account_id, namespace, name)
    if write and repo.read_only:
        raise PermissionDenied(
            f"Repo {repo.namespace}/{repo.name} is read-only: writes are refused",
            code=Code.REPO_READ_ONLY,
        )
    remote = write and backend.repos.remote
    if remote:
        backend.repos.check_writable()  # a bucket known down: 503 before any work
    git_dir = backend.repos.ensure(repo.id, repo.default_branch)
    # Named like the other work areas (kind-id-owner-nonce) so start-up sweeps know its owner.
    # Created when first used (``work_dir``, or git's temporary index and quarantine): a
    # JSON commit needs none, and a directory made and removed costs milliseconds of
    # filesystem journal on a busy disk.
    work = backend.settings.data_path / "tmp" / (
        f"write-{repo.id}-{backend.repos.owner}-{secrets.token_hex(4)}")
    try:
        writer = GitWriter(backend.git, git_dir, work)
        if remote:
            writer.quarantine()
        yield WriteTarget(repo, writer, started, remote)
    finally:
        if work.exists():
            backend.repos.remove_work_area(work)


def check_room(backend: Backend, repo: RepoRow, incoming_bytes: int) -> None:
    limits.check_storage(backend, repo, incoming_bytes)


def object_writer(target: WriteTarget) -> ObjectWriter:
    """The in-process object writer of a write: into the repo (local), or one pack into the
    write's quarantine (``s3``: ``move_refs(..., complete=True)`` uploads it as it is)."""
    if not target.remote:
        return ObjectWriter(target.writer.git_dir)
    return ObjectWriter(target.writer.git_dir, target.writer.tmp_dir / "objects", one_pack=True)


def adopt_objects(target: WriteTarget) -> None:
    """A quarantined write that passed its checks: local, its objects join the repo now; on
    ``s3`` they stay in the quarantine for ``move_refs`` to pack."""
    if not target.remote:
        target.writer.adopt_quarantine()


def move_refs(backend: Backend, target: WriteTarget, updates: Sequence[tuple[str, str, str]],
              *, complete: bool = False) -> None:
    """Move refs atomically: ``(full ref, new value or ZERO to delete, old value or ZERO for
    "must not exist")``, or raise ``RefUpdateRefused`` and move none.

    Local: one ``update-ref`` (git's lock files). ``s3``: the objects the new values need and
    the refs do not have (``pack-objects`` over the quarantine and the cache; ``complete``:
    the quarantine's one pack already is exactly that) stored as one pack, then the refs
    swapped in SQL (``S3RepoStore.commit_write``)."""
    writer = target.writer
    if not target.remote:
        writer.update_refs(updates)
        return
    quarantine = writer.tmp_dir / "objects"
    objects: Path | None = quarantine
    if not complete:
        tips = [new for _, new, _ in updates if new != ZERO]
        outgoing = writer.tmp_dir / "outgoing"
        known = writer.ref_values()
        objects = outgoing if tips and writer.pack_reachable(tips, known, outgoing) else None
    target.stored.append(backend.repos.commit_write(
        target.repo.id, objects, [(old, new, ref) for ref, new, old in updates]))


def record_write(backend: Backend, target: WriteTarget, added_bytes: int | None = None) -> None:
    """Record a write like a push: the repo's size measured from the disk with its row
    locked (so writes and pushes racing each other each leave the true size, and the
    account's running total with it), ``last_push_at`` and the maintenance counter.

    ``added_bytes``: a write that counted the bytes of the loose objects it created (REST
    commits) adds them to the recorded size instead, under the same lock; walking the
    objects directory of a repo with many loose objects was most of a small commit's time.
    Maintenance, which packs them, measures the disk again."""
    repo = target.repo
    now = now_us()
    if target.remote:
        added_bytes = sum(target.stored)  # the s3 store's size is its listed packs'
    backend.meta.record_repo_write(repo.id, now, lambda: backend.repos.size(repo.id),
                                   grow_by=added_bytes)
    events.record(backend, repo, "push", started_us=target.started_us)


def work_dir(target: WriteTarget) -> Path:
    """The write's private work area (removed when the write ends)."""
    target.writer.tmp_dir.mkdir(parents=True, exist_ok=True)
    return target.writer.tmp_dir
