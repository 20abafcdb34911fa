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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from artifactd.services.backend import Backend
from artifactd.storage.orphans import end_processes
from artifactd.storage.owner import OWNER_RE

log = logging.getLogger("artifactd.recovery")


@dataclass(frozen=True)
class Reclaimed:
    processes: int
    work_areas: int
    forks: int

    @property
    def total(self) -> int:
        return self.processes + self.work_areas + self.forks


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
    for token in gone_tokens:
        owner.forget(token)
    result = Reclaimed(processes, work_areas, forks)
    if result.total:
        log.warning("reclaimed what crashed server processes left: %d git processes ended, "
                    "%d work areas removed, %d fork directories without a row trashed",
                    processes, work_areas, forks)
    return result
