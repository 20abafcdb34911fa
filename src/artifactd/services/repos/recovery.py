"""Reclaiming what crashed server processes left behind (run at start-up and periodically).

A server process that dies without its shutdown (``kill -9``, out of memory, power) can
leave three kinds of debris, each marked with its owner token (see ``storage.owner``):

- git processes still running (an import's fetch and its remote helper, a repack): the
  process's watchdog normally ends them at once; what it missed is ended here;
- work areas under ``tmp/`` (a fork or import being built, a lazy repo creation), which
  hold hard links to a parent's objects and so keep even a deleted parent's bytes alive;
- a fork directory renamed into ``repos/`` whose row was never inserted: its intent file
  says so, and without a row the directory goes to the trash (with a row, it is the fork).

Only what belongs to an owner whose lock is free is touched: never a work area or a
directory that a live process (this one, another worker) is making right now.

``trash_unowned_dirs`` is the slower sweep for directories in ``repos/`` that have no row
and no intent (left by versions before intents, or a lazy creation racing a delete): it
runs once in the background after start-up and spares young directories and those a
live fork intent names.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from artifactd.services.backend import Backend
from artifactd.services.repos.maintenance import repo_lock
from artifactd.storage.orphans import end_processes
from artifactd.storage.owner import OWNER_RE

log = logging.getLogger("artifactd.recovery")


@dataclass(frozen=True)
class Reclaimed:
    processes: int
    work_areas: int
    forks: int
    maintenance: int = 0

    @property
    def total(self) -> int:
        return self.processes + self.work_areas + self.forks + self.maintenance


def reclaim(backend: Backend) -> Reclaimed:
    owner = backend.owner
    dead: dict[str, bool] = {}

    def is_dead(token: str) -> bool:
        if token not in dead:
            dead[token] = bool(OWNER_RE.fullmatch(token)) and not owner.is_alive(token)
        return dead[token]

    gone_tokens = owner.dead_tokens()  # before anything: these lock files are ours to drop
    processes = end_processes(backend.settings.data_path, is_dead)
    work_areas = 0
    for path, token in backend.repos.work_areas():
        if token is not None and is_dead(token):
            backend.repos.discard(path)
            work_areas += 1
    forks = 0
    for child_id, token, intent in backend.repos.pending_forks():
        if not is_dead(token):
            continue
        if backend.meta.get_repo_by_id(child_id) is None and backend.repos.path(child_id).exists():
            backend.repos.trash(child_id)
            forks += 1
        intent.unlink(missing_ok=True)
    maintenance = 0
    for repo_id, token, intent in backend.repos.pending_maintenance():
        if is_dead(token) and settle_maintenance(backend, repo_id):
            intent.unlink(missing_ok=True)
            maintenance += 1
    for token in gone_tokens:
        owner.forget(token)
    result = Reclaimed(processes, work_areas, forks, maintenance)
    if result.total:
        log.warning("reclaimed what crashed server processes left: %d git processes ended, "
                    "%d work areas removed, %d fork directories without a row trashed, "
                    "%d interrupted maintenance runs settled",
                    processes, work_areas, forks, maintenance)
    return result


def settle_maintenance(backend: Backend, repo_id: str) -> bool:
    """A maintenance run whose process died: remove git's temporary packs and record the
    size on disk. False if another process maintains the repo now (it records the size)."""
    with repo_lock(backend, repo_id) as held:
        if not held:
            return False
        if backend.meta.get_repo_by_id(repo_id) is not None and backend.repos.exists(repo_id):
            backend.repos.remove_temp_packs(repo_id)
            backend.meta.set_repo_size(repo_id, lambda: backend.repos.size(repo_id))
    return True


ORPHAN_DIR_GRACE = 3600.0  # seconds: younger directories without a row are left alone
ORPHAN_BATCH = 500


def trash_unowned_dirs(backend: Backend, grace: float = ORPHAN_DIR_GRACE) -> int:
    """Move repo directories that no row owns to the trash; returns how many."""
    pending = {child for child, token, _ in backend.repos.pending_forks()
               if backend.owner.is_alive(token)}
    cutoff = time.time() - grace
    moved = 0
    batch: list[str] = []

    def flush() -> int:
        owned = backend.meta.existing_repo_ids(batch)
        count = 0
        for repo_id in batch:
            if repo_id in owned or repo_id in pending:
                continue
            try:
                if backend.repos.path(repo_id).stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            # Asked again one by one: a row may have come since the batch was read.
            if backend.meta.get_repo_by_id(repo_id) is None:
                backend.repos.trash(repo_id)
                count += 1
        batch.clear()
        return count

    for repo_id, _path in backend.repos.repo_dirs():
        batch.append(repo_id)
        if len(batch) >= ORPHAN_BATCH:
            moved += flush()
    moved += flush()
    if moved:
        log.warning("moved %d repo directories without a row to the trash", moved)
    return moved

