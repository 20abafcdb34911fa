"""Repository maintenance: the git commands that keep a busy repo fast and a dead one small.

Every push adds a pack (or loose objects); without maintenance a repo pushed to a thousand
times has a thousand packs and every clone pays for it. ``maintain`` runs, in order:

1. ``pack-refs --all --prune``: one ``packed-refs`` file instead of a file per ref;
2. ``prune --expire=<grace>``: deletes loose objects that are unreachable *and* older than
   the grace period (before the repack, which would otherwise pack them);
3. a repack:
   - *geometric* (``repack -d --geometric=2 --write-midx --write-bitmap-index``): rolls the
     small recent packs into bigger ones so pack sizes form a geometric progression, and
     writes a multi-pack index with reachability bitmaps; cost proportional to what is new;
   - *full* (``repack -a -d -f --cruft``), when the repo is small: one pack with fresh
     deltas and a bitmap, unreachable objects set aside in a cruft pack that keeps their ages;
   cruft packs expire on the same clock as loose objects;
4. ``commit-graph write --reachable``: faster history walks for negotiation and ``log``.

A *small* repo (most agent repos: a few commits) is compacted instead: refs packed, the
packs rolled into one only when there is more than one, and no bitmap or commit-graph,
which would cost more inodes and blocks than the walks they speed up; empty directories
git left under ``refs/`` are removed. Its disk cost is then git's minimum (see
``repostore.SKELETON_DIRS``).

Nothing here moves a ref, and git replaces packs atomically (new pack and index written and
renamed into place before old ones are deleted; readers holding an old pack open keep
reading it), so clones and pushes running at the same time see a consistent repo. The grace
period is what keeps a push in flight safe: its objects may be unreachable for a moment
between being stored and its ref update, and prune never deletes anything that young.
Forks share object *files* by hard link, so deleting a pack here never removes bytes that
a fork still links.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from artifactd.storage.gitrunner import GitError, GitRunner

MAINTENANCE_TIMEOUT = 3600.0


@dataclass(frozen=True)
class MaintenanceReport:
    full: bool
    packs_before: int
    packs_after: int
    seconds: float


def count_packs(path: Path) -> int:
    pack_dir = path / "objects" / "pack"
    return sum(1 for _ in pack_dir.glob("*.pack")) if pack_dir.is_dir() else 0


def maintain(git: GitRunner, path: Path, *, full: bool, grace_seconds: int,
             small: bool = False,
             refs_guard: Callable[[], contextlib.AbstractContextManager[object]]
             = contextlib.nullcontext,
             ) -> MaintenanceReport:
    """``refs_guard``: makes the lock to hold while git rewrites the refs files (``pack-refs``,
    the empty directories left under ``refs/``). A store that writes refs files other than through git's
    lock files (the ``s3`` cache's sync, ``RepoStore.refs_guard``) orders its writes against
    ``pack-refs`` with it: ``pack-refs`` reads ``packed-refs`` when it takes its lock and renames
    its own copy over the file at the end, so a write in between would be undone."""
    started = time.monotonic()
    before = count_packs(path)
    expire = f"{int(grace_seconds)}.seconds.ago"

    def run(*args: str) -> None:
        # A push may hold packed-refs.lock for a moment; wait for it rather than fail.
        git.run(path, list(args), timeout=MAINTENANCE_TIMEOUT, low_priority=True,
                config=[("core.packedRefsTimeout", "10000")])

    with refs_guard():
        run("pack-refs", "--all", "--prune")
    # Prune first: a geometric repack packs loose objects whether reachable or not, and a
    # packed unreachable object would no longer age out through prune.
    run("prune", f"--expire={expire}")
    if small:
        if before > 1 or _has_loose_objects(path):
            run("repack", "-a", "-d", "-f", "-q", "--cruft", f"--cruft-expiration={expire}")
        with refs_guard():
            _remove_empty_dirs(path / "refs")
        return MaintenanceReport(True, before, count_packs(path), time.monotonic() - started)
    if full:
        # -f recomputes deltas: packs made by many small pushes and geometric rolls carry
        # poor ones, and on a repo small enough for a full repack the recompute is cheap.
        run("repack", "-a", "-d", "-f", "-q", "--write-bitmap-index", "--cruft",
            f"--cruft-expiration={expire}")
    else:
        geometric = ("repack", "-d", "-q", "--geometric=2", "--write-midx")
        try:
            run(*geometric, "--write-bitmap-index")
        except GitError as exc:
            # A multi-pack bitmap needs the packs it covers closed under reachability; a pack
            # a push lands during the roll can refer to objects outside them ("Packfile
            # doesn't have full closure"). The roll and the index are what matter: again
            # without the bitmap, which the next maintenance writes.
            if "bitmap" not in exc.stderr:
                raise
            run(*geometric)
    run("commit-graph", "write", "--reachable")
    return MaintenanceReport(full, before, count_packs(path), time.monotonic() - started)


def _has_loose_objects(path: Path) -> bool:
    objects = path / "objects"
    return any(len(entry.name) == 2 and entry.is_dir() for entry in objects.iterdir()) \
        if objects.is_dir() else False


def _remove_empty_dirs(root: Path) -> None:
    """Remove empty directories below ``root`` (not ``root``), deepest first.

    A ref update racing this recreates its directory: git makes leading directories
    race-proof (it retries when one vanishes), as it must against its own pruning.
    """
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if dirpath != str(root):
            with contextlib.suppress(OSError):  # not empty, or already gone
                os.rmdir(dirpath)
