"""The admission every REST write passes, the same a push passes (``git_access``, ``limits``).

- the caller's API token needs edit permission (checked by the route, ``endpoint(edit=True)``);
- the repo must be ready and not read-only;
- the repo's git rate counts the write like a push;
- storage limits: the bytes the write adds are checked before anything is written;
- afterwards the repo's size and last push are recorded through the same metadata call the
  push path uses, and an analytics ``push`` event is emitted (``record_write``: the one place
  to re-point when push accounting changes).
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from artifactd.errors import Code, Conflict, PermissionDenied
from artifactd.services import limits
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import events
from artifactd.services.repos import repos
from artifactd.storage.gitwrite import GitWriter
from artifactd.storage.metadata import RepoRow


@dataclass(frozen=True)
class WriteTarget:
    repo: RepoRow
    writer: GitWriter
    started_us: int


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
    if write and backend.repos.remote:
        raise Conflict("REST writes are not available on the s3 storage backend yet: "
                       "push with git instead", code=Code.NOT_ON_S3_BACKEND)
    if write and repo.read_only:
        raise PermissionDenied(
            f"Repo {repo.namespace}/{repo.name} is read-only: writes are refused",
            code=Code.REPO_READ_ONLY,
        )
    git_dir = backend.repos.ensure(repo.id, repo.default_branch)
    # Named like the other work areas (kind-id-owner-nonce) so start-up sweeps know its owner.
    # Created when first used (``work_dir``, or git's temporary index and quarantine): a
    # JSON commit needs none, and a directory made and removed costs milliseconds of
    # filesystem journal on a busy disk.
    work = backend.settings.data_path / "tmp" / (
        f"write-{repo.id}-{backend.repos.owner}-{secrets.token_hex(4)}")
    try:
        yield WriteTarget(repo, GitWriter(backend.git, git_dir, work), started)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def check_room(backend: Backend, repo: RepoRow, incoming_bytes: int) -> None:
    limits.check_storage(backend, repo, incoming_bytes)


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
    backend.meta.record_repo_write(repo.id, now, lambda: backend.repos.size(repo.id),
                                   grow_by=added_bytes)
    events.record(backend, repo, "push", started_us=target.started_us)


def work_dir(target: WriteTarget) -> Path:
    """The write's private work area (removed when the write ends)."""
    target.writer.tmp_dir.mkdir(parents=True, exist_ok=True)
    return target.writer.tmp_dir
