"""Maintenance of one repo on the ``s3`` store, driven step by step: the store in this process
on a real SeaweedFS bucket and a real SQLite catalog, real git doing the repack.

The races the server's scheduler runs into by chance (a sync of the cache in the middle of a
repack, the cache wiped under it, a lease outliving its holder) are made to happen here at
a chosen moment, so each either holds or fails every time.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from artifactd.config import Settings
from artifactd.services.backend import Backend
from artifactd.services.repos import maintenance, repos
from artifactd.storage.db import make_engine, migrate
from artifactd.storage.gitrunner import GitRunner
from artifactd.storage.objectstore import ObjectStore, ObjectStoreConfig
from artifactd.storage.repomaint import maintain
from artifactd.storage.s3store import cache
from artifactd.storage.s3store.catalog import Catalog, Pack
from artifactd.storage.s3store.store import S3RepoStore
from tests.gitutil import Git
from tests.seaweed import SeaweedFS

PUSHES = 4


@dataclass
class Node:
    store: S3RepoStore
    git: GitRunner


@pytest.fixture
def nodes(tmp_path: Path, seaweedfs: SeaweedFS) -> Iterator[tuple[Node, Node]]:
    """Two stores (two nodes' caches) on one catalog and one bucket."""
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    migrate(engine)
    objects = ObjectStore(ObjectStoreConfig(
        endpoint_url=seaweedfs.endpoint_url, bucket=seaweedfs.new_bucket(),
        region=seaweedfs.region, access_key_id=seaweedfs.access_key,
        secret_access_key=seaweedfs.secret_key))
    made = []
    for name in ("a", "b"):
        data = tmp_path / name
        owner = os.urandom(8).hex()
        made.append(Node(S3RepoStore(data, Catalog(engine), objects, owner=owner,
                                     lease_seconds=1.0), GitRunner(data, owner=owner)))
    yield made[0], made[1]
    engine.dispose()


def _repo_of_many_packs(node: Node, tmp_path: Path) -> str:
    """A repo imported with one pack per push (``PUSHES`` of them); returns its id."""
    repo_id = os.urandom(16).hex()
    staging = node.store.staging("import", repo_id, "main")
    git = Git(tmp_path / "home")
    git.run("config", "receive.unpackLimit", "1", cwd=staging)
    work = tmp_path / "work"
    git.new_work(work, {"f0.txt": "0\n"})
    git.run("push", "-q", str(staging), "main", cwd=work)
    for i in range(1, PUSHES):
        git.commit_files(work, {f"f{i}.txt": f"{i}\n" * 100}, f"c{i}")
        git.run("push", "-q", str(staging), "main", cwd=work)
    node.store.install(staging, repo_id)
    return repo_id


def _listed(node: Node, repo_id: str) -> set[str]:
    return {pack.name for pack in node.store.catalog.snapshot(repo_id).packs}


def _move_a_ref_elsewhere(node: Node, repo_id: str) -> None:
    """What a push through another node does to the catalog: a new generation."""
    tip = dict(node.store.catalog.refs(repo_id))["refs/heads/main"]
    node.store.catalog.commit_push(repo_id, [("0" * 40, tip, "refs/heads/other")], [],
                                   time.time_ns() // 1000)


def test_a_sync_during_a_repack_does_not_bring_back_the_packs_it_replaced(
        nodes: tuple[Node, Node], tmp_path: Path) -> None:
    a, b = nodes
    repo_id = _repo_of_many_packs(a, tmp_path)
    assert len(_listed(a, repo_id)) == PUSHES
    with a.store.maintenance_lease(repo_id, "main") as held:
        assert held
        maintain(a.git, a.store.path(repo_id), full=True, grace_seconds=3600)
        # A push through B lands between the repack and the swap; a read through A syncs.
        _move_a_ref_elsewhere(b, repo_id)
        path = a.store.ensure(repo_id, "main")
        a.store.publish_maintenance(repo_id)
    listed = _listed(a, repo_id)
    assert len(listed) == 1, listed
    on_disk = {p.name[len("pack-"):-len(".idx")] for p in (path / "objects" / "pack").glob("*.idx")}
    assert on_disk == listed
    # A cold node has every object from the one pack left.
    cold = b.store.ensure(repo_id, "main")
    Git(tmp_path / "home").run("fsck", "--strict", "--no-progress", cwd=cold)
    assert "refs/heads/other" in dict(b.store.catalog.refs(repo_id))


def test_a_sync_during_maintenance_is_not_undone_by_its_pack_refs(
        nodes: tuple[Node, Node], tmp_path: Path) -> None:
    """git's pack-refs reads packed-refs when it takes its lock and renames its copy over the
    file at the end; a sync rewriting the cache's refs in between was undone, leaving the
    cache behind its generation for good (a clone through that node got an old head). The
    maintenance's pack-refs waits for the cache's refs lock, which every sync holds."""
    a, b = nodes
    repo_id = _repo_of_many_packs(a, tmp_path)
    path = a.store.ensure(repo_id, "main")
    tip = dict(a.store.catalog.refs(repo_id))["refs/heads/main"]
    # A push through this node leaves loose refs behind (receive-pack's), for pack-refs to pack.
    loose = path / "refs" / "heads" / "pushed"
    loose.write_text(f"{tip}\n")
    with a.store.maintenance_lease(repo_id, "main") as held:
        assert held
        done: list[BaseException | None] = []

        def run() -> None:
            try:
                maintain(a.git, path, full=True, grace_seconds=3600,
                         refs_guard=lambda: a.store.refs_guard(repo_id))
                done.append(None)
            except BaseException as exc:
                done.append(exc)

        with cache.refs_lock(path):  # a sync of this cache in progress
            worker = threading.Thread(target=run)
            worker.start()
            time.sleep(1.0)
            # pack-refs has not run: the loose ref is still there.
            assert loose.is_file() and not (path / "packed-refs.lock").exists()
            _move_a_ref_elsewhere(b, repo_id)
            cache.bring_current(path, a.store.catalog.snapshot(repo_id), a.store.objects)
        worker.join(60)
        assert done == [None]
        a.store.publish_maintenance(repo_id)
    listing = Git(tmp_path / "home").out("for-each-ref", "--format=%(refname) %(objectname)",
                                         cwd=path)
    on_disk = dict(line.split(" ") for line in listing.splitlines())
    assert on_disk == dict(a.store.catalog.refs(repo_id))
    assert "refs/heads/other" in on_disk and "refs/heads/pushed" not in on_disk


def test_a_cache_wiped_during_a_repack_leaves_the_pack_list_whole(
        nodes: tuple[Node, Node], tmp_path: Path) -> None:
    a, b = nodes
    repo_id = _repo_of_many_packs(a, tmp_path)
    before = _listed(a, repo_id)
    with a.store.maintenance_lease(repo_id, "main") as held:
        assert held
        maintain(a.git, a.store.path(repo_id), full=True, grace_seconds=3600)
        # Eviction leaves a repo under maintenance alone; an operator's wipe does not ask.
        a.store.cache_max_bytes = 0
        assert a.store.evict() == 0 and a.store.path(repo_id).is_dir()
        shutil.rmtree(a.store.path(repo_id))
        a.store.publish_maintenance(repo_id)
    assert _listed(a, repo_id) == before
    Git(tmp_path / "home").run("fsck", "--strict", "--no-progress",
                               cwd=b.store.ensure(repo_id, "main"))


def test_a_maintenance_lease_is_renewed_while_held_and_expires_once_its_holder_is_gone(
        nodes: tuple[Node, Node], tmp_path: Path) -> None:
    a, b = nodes
    repo_id = _repo_of_many_packs(a, tmp_path)
    with a.store.maintenance_lease(repo_id, "main") as held:
        assert held
        deadline = time.monotonic() + 3 * a.store.lease_seconds
        while time.monotonic() < deadline:  # well past the lease: renewed, never taken over
            with b.store.maintenance_lease(repo_id, "main") as other:
                assert not other
            time.sleep(0.1)
    # A holder that died without releasing (kill -9): the lease is free once it expires.
    now = time.time_ns() // 1000
    assert a.store.catalog.take_lease(repo_id, "dead-node", now, a.store.lease_seconds)
    with b.store.maintenance_lease(repo_id, "main") as other:
        assert not other
    deadline = time.monotonic() + 30
    while True:
        with b.store.maintenance_lease(repo_id, "main") as other:
            if other:
                break
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_repos_whose_maintenance_fails_are_set_aside_and_the_others_get_theirs(
        tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    """A batch's worth of busy repos whose packs are gone from the bucket fail every time;
    they must not keep a healthy, less busy repo from its maintenance."""
    backend = Backend.open(Settings(
        data_dir=str(tmp_path / "data"), storage_backend="s3",
        s3_endpoint_url=seaweedfs.endpoint_url, s3_bucket=seaweedfs.new_bucket(),
        s3_region=seaweedfs.region, s3_access_key_id=seaweedfs.access_key,
        s3_secret_access_key=seaweedfs.secret_key))
    try:
        store = backend.repos
        assert isinstance(store, S3RepoStore)
        now = time.time_ns() // 1000
        account = os.urandom(16).hex()
        backend.meta.ensure_account(account, now)
        for i in range(maintenance.BATCH):
            rid = repos.create_repo(backend, account, "default", f"broken-{i}").repo.id
            gone = Pack(os.urandom(20).hex(), 100)  # listed, never in the bucket
            store.catalog.touch_packs([gone], now)
            store.catalog.publish(rid, [("refs/heads/main", "a" * 40)], [gone.name], now)
            for _ in range(3):
                backend.meta.record_repo_write(rid, now, lambda: 100)
        healthy = repos.create_repo(backend, account, "default", "healthy").repo.id
        staging = store.staging("import", healthy, "main")
        git = Git(tmp_path / "home")
        git.new_work(tmp_path / "w", {"a.txt": "a\n"})
        git.run("push", "-q", str(staging), "main", cwd=tmp_path / "w")
        store.install(staging, healthy)
        backend.meta.record_repo_write(healthy, now, lambda: store.size(healthy))
        backoff = maintenance.Backoff()
        assert maintenance.run_due(backend, backoff) == 0  # the broken ones, tried and failed
        assert len(backoff) == maintenance.BATCH
        assert maintenance.run_due(backend, backoff) == 1  # they wait; the healthy one's turn
        row = backend.meta.get_repo_by_id(healthy)
        assert row is not None and row.maintained_us > 0
    finally:
        backend.close()
