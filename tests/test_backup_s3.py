"""``artifactd backup`` / ``restore`` of the ``s3`` repo store (docs/backup.md), end to end.

A node on PostgreSQL + SeaweedFS is backed up while a client keeps pushing to it; the
backup (the metadata snapshot and the bucket's pack objects its pack lists name, each once)
is restored into a new database, a new bucket and an empty cache dir, and a node there
serves every repo, ref, token and setting: clone, push, content read, fork. Then a restore
into a bucket prefix that is not empty, an unreachable bucket, and a backup of one repo
store restored as the other are refused, writing nothing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy

from artifactd import Artifacts
from artifactd.errors import Code
from artifactd.services.backup import BackupError, restore_backup
from artifactd.storage.backupstore import DirectoryStore
from artifactd.storage.db import make_engine
from artifactd.storage.objectstore import ObjectStore, ObjectStoreConfig
from tests.gitutil import Git, Repo, bearer, create_repo
from tests.harness import Postgres, Server, free_port
from tests.multinode import Cluster, restart, s3_env, start_cluster
from tests.seaweed import SeaweedFS
from tests.seed import clone, push
from tests.test_backup import Pusher, cli, moved


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres,
           seaweedfs: SeaweedFS) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("s3-backup-src"), postgres, seaweedfs, count=1)
    yield cluster
    cluster.stop()


def bucket_of(store: SeaweedFS, bucket: str, prefix: str = "", endpoint: str | None = None) -> ObjectStore:
    return ObjectStore(ObjectStoreConfig(
        endpoint_url=endpoint or store.endpoint_url, bucket=bucket, region=store.region,
        prefix=prefix, access_key_id=store.access_key, secret_access_key=store.secret_key,
        connect_timeout=1, read_timeout=5))


def remote_refs(git: Git, repo: Repo) -> dict[str, str]:
    """The repo's refs as its node serves them (on ``s3`` a node's disk is only a cache)."""
    out = git.out("-c", bearer(repo.token), "ls-remote", "--refs", repo.remote)
    return {ref: oid for oid, ref in (line.split("\t", 1) for line in out.splitlines())}


def test_backup_of_s3_while_pushing_then_restore_into_a_new_bucket_and_serve(
        source: Cluster, postgres: Postgres, seaweedfs: SeaweedFS, tmp_path: Path,
        unique_name: str) -> None:
    node = source.nodes[0]
    git = Git(tmp_path / "home")
    app = create_repo(node, f"{unique_name}-app", description="the app")
    work = tmp_path / "app"
    git.new_work(work, {"README.md": "# app\n", "big.bin": os.urandom(64 * 1024)})
    git.run("tag", "-a", "v1", "-m", "v1", cwd=work)
    push(git, app, work, "refs/heads/main", "refs/tags/v1")
    read_token = app.mint("read")["plaintext"]
    with Artifacts(node.url, node.account_id, node.token) as client:
        forked = client.get(app.name).fork(f"{unique_name}-fork")
    fork = Repo(node, f"{unique_name}-fork", forked.id, forked.remote, forked.token)
    app_refs = remote_refs(git, app)

    busy = create_repo(node, f"{unique_name}-busy")
    busy_work = tmp_path / "busy"
    git.new_work(busy_work)
    pusher = Pusher(git, busy, busy_work, [], [], threading.Event())
    pusher.start()
    env = {**s3_env(seaweedfs, source.bucket), "ARTIFACTD_DATABASE_URL": source.database_url}
    location = tmp_path / "backup"
    try:
        pusher.wait_for(2)
        acknowledged_before = pusher.acknowledged[-1]
        done = cli("backup", str(location), "--data-dir", str(node.data_dir), "--json", env=env)
        assert done.returncode == 0, done.stderr
        pusher.wait_for(len(pusher.acknowledged) + 1)  # pushes go on after it, too
    finally:
        pusher.finish()
    summary = json.loads(done.stdout)
    manifest = json.loads((location / "manifest.json").read_text())
    assert manifest["repo_store"] == "s3" and summary["repos"] >= 3, (manifest, done.stderr)
    # The bucket's pack objects are in the backup, each once: the fork lists its parent's
    # packs and adds no file; the local cache dir contributed nothing.
    entries = [json.loads(line) for line in (location / "files.jsonl").read_text().splitlines()]
    pack_paths = [e["path"] for e in entries if e["path"].startswith("packs/")]
    assert len(pack_paths) == len(set(pack_paths)) and pack_paths
    assert source.listed_keys(fork.id) == source.listed_keys(app.id) <= set(pack_paths)
    assert not [e for e in entries if e["path"].startswith("repos/")]

    # Restore: a new database, a new bucket under a prefix, a new empty cache dir.
    target_url = postgres.new_database()
    target_bucket = seaweedfs.new_bucket("restored")
    target_env = {**s3_env(seaweedfs, target_bucket, ARTIFACTD_S3_PREFIX="site/b")}
    data_dir = tmp_path / "restored"
    done = cli("restore", str(location), "--data-dir", str(data_dir), "--database-url", target_url,
               "--json", env=target_env)
    assert done.returncode == 0, done.stderr
    keys = {item["Key"] for item in seaweedfs.client().list_objects_v2(
        Bucket=target_bucket).get("Contents", [])}
    assert keys == {f"site/b/{path}" for path in pack_paths}

    restored = Server(data_dir=data_dir, port=free_port(), env={
        **{k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")},
        "ARTIFACTD_DATABASE_URL": target_url, **target_env},
        account_id=node.account_id, token=node.token, read_token=node.read_token)
    restart(restored)
    try:
        with Artifacts(restored.url, restored.account_id, restored.token) as client:
            assert client.info(app.name).description == "the app"
        app_there = moved(app, restored)
        assert remote_refs(git, app_there) == app_refs
        copy = clone(git, app_there, tmp_path / "app-clone", token=read_token)
        assert (copy / "big.bin").read_bytes() == (work / "big.bin").read_bytes()
        git.run("fsck", "--strict", "--no-progress", cwd=copy)
        # Sizes (what limits count) are the bytes of the packs each repo lists.
        engine = make_engine(target_url)
        try:
            with engine.connect() as conn:
                sizes = dict(conn.execute(sqlalchemy.text("SELECT id, size_bytes FROM repos")).all())
        finally:
            engine.dispose()
        assert sizes[app.id] == sizes[fork.id] > 64 * 1024
        fork_copy = clone(git, moved(fork, restored), tmp_path / "fork-clone")
        assert git.out("rev-parse", "HEAD", cwd=fork_copy) == app_refs["refs/heads/main"]
        # The busy repo: the push acknowledged before the backup, and both refs of the last
        # atomic push in it, never one without the other.
        busy_there = moved(busy, restored)
        busy_copy = clone(git, busy_there, tmp_path / "busy-clone")
        head = git.out("rev-parse", "HEAD", cwd=busy_copy)
        assert head in pusher.attempted
        git.run("merge-base", "--is-ancestor", acknowledged_before, head, cwd=busy_copy)
        assert remote_refs(git, busy_there)["refs/heads/mirror"] == head
        git.run("fsck", "--strict", "--no-progress", cwd=busy_copy)
        # Writes, content reads and forks work there with the old tokens.
        new = git.commit_files(copy, {"after.txt": "restored\n"}, "after the restore")
        git.run("-c", bearer(app.token), "push", "-q", app_there.remote, "HEAD:refs/heads/main",
                cwd=copy)
        with httpx.Client(base_url=restored.ns_url(), timeout=60,
                          headers={"Authorization": f"Bearer {restored.token}"}) as c:
            raw = c.get(f"/repos/{app.name}/raw/main/after.txt")
            assert (raw.status_code, raw.text) == (200, "restored\n")
        with Artifacts(restored.url, restored.account_id, restored.token) as client:
            again = client.get(app.name).fork(f"{unique_name}-fork2")
        fork2 = clone(git, Repo(restored, f"{unique_name}-fork2", again.id, again.remote,
                                again.token), tmp_path / "fork2-clone")
        assert git.out("rev-parse", "HEAD", cwd=fork2) == new
    finally:
        restored.stop()

    # Refused, writing nothing: the same backup into the (now used) bucket prefix, into an
    # unreachable bucket, and without a target bucket at all (a local restore of it).
    held = {item["Key"] for item in seaweedfs.client().list_objects_v2(
        Bucket=target_bucket).get("Contents", [])}
    for bucket, code in ((bucket_of(seaweedfs, target_bucket, "site/b"), Code.RESTORE_TARGET_NOT_EMPTY),
                         (bucket_of(seaweedfs, target_bucket, "x", f"http://127.0.0.1:{free_port()}"),
                          Code.OBJECT_STORE_UNAVAILABLE),
                         (None, Code.RESTORE_BACKEND_MISMATCH)):
        target = tmp_path / f"never-{int(code)}"
        with pytest.raises(BackupError) as refused:
            restore_backup(DirectoryStore(location), target, bucket=bucket)
        assert refused.value.code == code, refused.value.message
        assert not target.exists()
    assert {item["Key"] for item in seaweedfs.client().list_objects_v2(
        Bucket=target_bucket).get("Contents", [])} == held


def test_a_backup_missing_a_listed_pack_fails_and_leaves_nothing(
        source: Cluster, seaweedfs: SeaweedFS, tmp_path: Path, unique_name: str) -> None:
    node = source.nodes[0]
    git = Git(tmp_path / "home")
    repo = create_repo(node, f"{unique_name}-lost")
    git.new_work(tmp_path / "work")
    push(git, repo, tmp_path / "work", "HEAD:refs/heads/main")
    lost = sorted(source.listed_keys(repo.id))[0]
    seaweedfs.client().delete_object(Bucket=source.bucket, Key=lost)  # behind our back
    location = tmp_path / "backup"
    env = {**s3_env(seaweedfs, source.bucket), "ARTIFACTD_DATABASE_URL": source.database_url}
    done = cli("backup", str(location), "--data-dir", str(node.data_dir), env=env)
    assert done.returncode == 1
    assert f"[{int(Code.PACK_MISSING)}]" in done.stderr and lost in done.stderr, done.stderr
    assert not location.exists() or not any(location.iterdir())
