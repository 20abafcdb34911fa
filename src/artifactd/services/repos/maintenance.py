"""When to maintain which repo, and how much of the machine maintenance may use.

A repo is due once it has taken ``maintenance_after_pushes`` pushes since its last
maintenance. Each server process runs one maintenance thread that wakes every
``maintenance_interval`` seconds, takes up to ``BATCH`` due repos (busiest first) and
maintains them one at a time, under ``nice -n 19``: at most one maintenance git process per
server process, at the lowest CPU priority. A per-repo ``flock`` keeps two workers from
maintaining the same repo at once. The result is visible as the repo's ``maintained_at``
and in the ``artifactd_maintenance_*`` metrics.

A repo whose maintenance fails (on ``s3``, a pack deleted from the bucket behind our back)
stays due, and as the busiest it would come first in every batch: it is set aside for a
while (``Backoff``), doubling, so that a few broken repos cannot stop maintenance of all the
others.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from artifactd.observability import MAINTENANCE_RUNS, MAINTENANCE_SECONDS
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.storage.metadata import RepoRow
from artifactd.storage.repomaint import MaintenanceReport, maintain
from artifactd.storage.repostore import exclusive_or_busy

log = logging.getLogger("artifactd.maintenance")

BATCH = 10
FULL_REPACK_MAX_BYTES = 256 << 20  # below this a full repack is cheap: one pack + bitmap
# Below this a repo is compacted (refs packed, one pack, no bitmap or commit-graph): for a
# few commits those indexes cost more disk than the walks they save (``repomaint``).
SMALL_REPO_MAX_BYTES = 1 << 20
STALE_TMP_SECONDS = 6 * 3600  # work areas older than this are leftovers of a crash
RETRY_AFTER_FAILURE = 60.0  # seconds before a failed repo is tried again, doubled each time
RETRY_AFTER_FAILURE_MAX = 3600.0
BACKOFF_MAX_REPOS = 1000  # set aside at most this many (the due query skips over them)


class Backoff:
    """Repos whose last maintenance failed, each set aside until a moment (monotonic)."""

    def __init__(self) -> None:
        self._until: dict[str, tuple[float, float]] = {}  # repo id -> (until, last delay)

    def __len__(self) -> int:
        return len(self._until)

    def waiting(self, repo_id: str) -> bool:
        entry = self._until.get(repo_id)
        return entry is not None and time.monotonic() < entry[0]

    def failed(self, repo_id: str) -> None:
        last = self._until.get(repo_id, (0.0, RETRY_AFTER_FAILURE / 2))[1]
        delay = min(last * 2, RETRY_AFTER_FAILURE_MAX)
        if repo_id in self._until or len(self._until) < BACKOFF_MAX_REPOS:
            self._until[repo_id] = (time.monotonic() + delay, delay)

    def succeeded(self, repo_id: str) -> None:
        self._until.pop(repo_id, None)


@contextmanager
def repo_lock(backend: Backend, repo_id: str) -> Iterator[bool]:
    """Non-blocking cross-process lock for one repo's maintenance; yields whether we hold it."""
    lock_dir = backend.settings.data_path / "tmp" / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"maint-{repo_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    with exclusive_or_busy(fd) as held:
        yield held


@contextmanager
def _maintenance_slot(backend: Backend, repo: RepoRow) -> Iterator[bool]:
    """This machine's lock on the repo, then the store's lease (one node at a time on s3)."""
    with repo_lock(backend, repo.id) as held:
        if not held:
            yield False
            return
        with backend.repos.maintenance_lease(repo.id, repo.default_branch) as leased:
            yield leased


def maintain_repo(backend: Backend, repo: RepoRow, *, full: bool | None = None) -> MaintenanceReport | None:
    """Maintain one repo now; ``None`` if another process is already doing it or it has no data."""
    if not backend.repos.exists(repo.id):
        return None
    with _maintenance_slot(backend, repo) as held:
        if not held:
            return None
        # The scheduler's choice (``full`` not given): a small repo due for its first push,
        # not for being busy, is compacted; a busy one gets bitmaps and a commit-graph.
        small = (full is None and repo.size_bytes < SMALL_REPO_MAX_BYTES
                 and repo.pushes_since_maintenance < backend.settings.maintenance_after_pushes)
        if full is None:
            full = repo.size_bytes < FULL_REPACK_MAX_BYTES
        # A crash from here to the recorded size leaves an intent that start-up settles
        # (services/repos/recovery.py): git's temporary packs removed, the size measured again.
        backend.repos.begin_maintenance(repo.id)
        report = maintain(backend.git, backend.repos.path(repo.id), full=full,
                          grace_seconds=int(backend.settings.gc_grace_seconds),
                          small=small, refs_guard=lambda: backend.repos.refs_guard(repo.id))
        backend.repos.publish_maintenance(repo.id)
        # Measured with the row locked, so a push recorded meanwhile is not overwritten.
        backend.meta.finish_maintenance(repo.id, now_us(), repo.pushes_since_maintenance,
                                        lambda: backend.repos.size(repo.id))
        backend.repos.end_maintenance(repo.id)
    MAINTENANCE_RUNS.labels("full" if report.full else "geometric").inc()
    MAINTENANCE_SECONDS.observe(report.seconds)
    log.info("maintained repo %s: %d packs -> %d (%s, %.2fs)", repo.id, report.packs_before,
             report.packs_after, "full" if report.full else "geometric", report.seconds)
    return report


def run_due(backend: Backend, backoff: Backoff | None = None) -> int:
    """Maintain up to ``BATCH`` due repos, skipping those ``backoff`` sets aside."""
    backoff = backoff if backoff is not None else Backoff()
    done = tried = 0
    for repo in backend.meta.repos_due_for_maintenance(
        backend.settings.maintenance_after_pushes, BATCH + len(backoff)
    ):
        if tried == BATCH:
            break
        if backoff.waiting(repo.id):
            continue
        tried += 1
        try:
            if maintain_repo(backend, repo) is not None:
                done += 1
            backoff.succeeded(repo.id)
        except Exception:
            log.exception("maintenance of repo %s failed; set aside for a while", repo.id)
            backoff.failed(repo.id)
    return done


def clean_stale_tmp(backend: Backend) -> int:
    """Remove old leftovers in ``tmp/``: work areas whose name carries no owner token (made
    by versions before ``services.repos.recovery``, which reclaims the others at once)."""
    import shutil

    removed = 0
    cutoff = time.time() - STALE_TMP_SECONDS
    keep = {"git-home", "locks", "pending", "prometheus", "ratelimit.shm"}
    # A work area with an owner may belong to a live import that runs for hours: only its
    # owner's death (``services.repos.recovery``) makes it debris, never its age.
    keep |= {path.name for path, owner in backend.repos.work_areas() if owner is not None}
    for entry in backend.repos.tmp_root.iterdir():
        if entry.name in keep:
            continue
        try:
            if entry.stat().st_mtime < cutoff:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


class MaintenanceThread:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._stop = threading.Event()
        self._backoff = Backoff()
        self._thread = threading.Thread(target=self._run, name="artifactd-maintenance", daemon=True)

    def _run(self) -> None:
        try:
            clean_stale_tmp(self.backend)
        except Exception:
            log.exception("cleaning stale work areas failed")
        while not self._stop.wait(self.backend.settings.maintenance_interval):
            try:
                run_due(self.backend, self._backoff)
            except Exception:
                log.exception("maintenance pass failed")

    def start(self) -> None:
        if self.backend.settings.maintenance_interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
