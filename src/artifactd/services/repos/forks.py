"""Fork a repo: a new repo that starts from the parent's history and then lives on its own.

The fork's directory is built before its row exists and renamed into place under a fresh
id, so no request can see it half made and there is no ``forking`` window to wait for: the
fork answers ``ready`` from the start. If the name turns out to be taken (the row insert
fails), the directory goes to the trash and nothing else was created. A crash between the
rename and the row leaves a fork intent (``RepoStore.fork``) that start-up resolves
(``services.repos.recovery``): without a row, the directory goes to the trash.

The fork records where it came from in ``source`` as ``fork:<namespace>/<name>`` (the
parent's name at fork time; the parent may later be deleted or its name reused). It takes
the parent's default branch, and its description unless the request gives one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from artifactd.errors import Code, Conflict, ServiceUnavailable
from artifactd.services import limits
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import event_stream, events
from artifactd.services.names import check_name
from artifactd.services.repos import repos
from artifactd.storage.forklink import LinkedObjects, ObjectsMoved
from artifactd.storage.metadata import RepoRow

SNAPSHOT_ATTEMPTS = 12


@dataclass(frozen=True)
class ForkedRepo:
    created: repos.CreatedRepo
    objects: int


# ArtifactFS keeps the paths agents read here (src/artifactd/fs/hotset.py); forks inherit it.
HOT_SET_REF = "refs/artifact-fs/hotset"


def fork_source(parent: RepoRow) -> str:
    return f"fork:{parent.namespace}/{parent.name}"


def read_refs(backend: Backend, parent: RepoRow) -> list[tuple[str, str]]:
    """The parent's refs as (name, object id); symbolic refs are not copied."""
    return backend.repos.ref_list(parent.id)


def check_fork_limits(backend: Backend, parent: RepoRow, linked_bytes: int) -> None:
    """The storage limits a new fork must fit in: the per-repo and the account limit.

    A fork adds no bytes on disk (hardlinks), but it is accounted the parent's object bytes,
    as it keeps them alive once the parent is gone; so it is checked as a new, empty repo
    receiving that many bytes.
    """
    limits.check_storage(backend, dataclasses.replace(parent, size_bytes=0, reserved_bytes=0),
                         linked_bytes)


def fork_repo(
    backend: Backend,
    account_id: str,
    namespace: str,
    parent_name: str,
    name: object,
    *,
    description: str | None = None,
    read_only: bool = False,
    default_branch_only: bool = False,
) -> ForkedRepo:
    started = now_us()
    parent = repos.get_repo(backend, account_id, namespace, parent_name)
    repos.require_ready(parent)
    fork_name = check_name(name, "name", "repo name")
    if backend.meta.get_repo(account_id, namespace, fork_name) is not None:
        raise Conflict(
            f"A repo named {fork_name!r} already exists in namespace {namespace!r}",
            code=Code.REPO_EXISTS, pointer="/name",
        )
    child_id = repos.new_repo_id()
    linked = _link(backend, parent, child_id, default_branch_only)
    try:
        check_fork_limits(backend, parent, linked.bytes)
        created = repos.create_repo(
            backend, account_id, namespace, fork_name,
            description=description if description is not None else parent.description,
            default_branch=parent.default_branch,
            read_only=read_only, source=fork_source(parent), repo_id=child_id, event=None,
        )
    except BaseException:
        backend.repos.trash(child_id)
        raise
    finally:
        backend.repos.settle_fork(child_id)
    # The check above read the totals; this conditional update is the one that holds when
    # forks and pushes of the account run at the same time.
    if not backend.meta.set_repo_size(child_id, linked.bytes,
                                      account_limit=backend.settings.max_account_bytes,
                                      outbox=[event_stream.forked(parent, created.repo)]):
        backend.meta.delete_repo(child_id)
        backend.repos.trash(child_id)
        raise limits.account_limit_error(backend, account_id, linked.bytes)
    events.record(backend, created.repo, "fork", started_us=started)
    return ForkedRepo(created, linked.objects)


def _link(backend: Backend, parent: RepoRow, child_id: str, default_branch_only: bool) -> LinkedObjects:
    """Snapshot the parent's refs, then link its objects; again if a repack moved files.

    A repack replaces packs and prune-packed removes loose objects one directory after
    another for a moment; under load several attempts in a row can land in that moment,
    so attempts back off (about 3 s in all) before the fork gives up with a retriable 503.
    """
    head = f"refs/heads/{parent.default_branch}"
    for attempt in range(SNAPSHOT_ATTEMPTS):
        refs = read_refs(backend, parent)
        if default_branch_only:  # and ArtifactFS's learned hot set (a fork inherits it)
            refs = [(n, s) for n, s in refs if n in (head, HOT_SET_REF)]
        try:
            return backend.repos.fork(parent.id, child_id, refs, parent.default_branch)
        except ObjectsMoved:
            time.sleep(min(0.4, 0.01 * 2**attempt))
    raise ServiceUnavailable("The parent repo kept changing during the fork (maintenance); "
                             "try again", retry_after=1)
