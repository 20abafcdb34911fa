"""A push's pack streamed to the bucket while it arrives (``s3`` backend, two nodes on
PostgreSQL and SeaweedFS): a pack larger than one upload part goes up as a multipart upload
while receive-pack reads it, and only its index after; a thin pack (completed by index-pack,
so not the bytes that arrived) falls back to uploading the completed pack; an interrupted or
refused push aborts its upload, leaving no object and no listed pack."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy

from artifactd.storage.db import make_engine
from tests.gitutil import Git, Repo, bearer, create_repo
from tests.harness import Postgres, Server
from tests.multinode import Cluster, restart, start_cluster
from tests.seaweed import SeaweedFS

PART = 5 << 20  # the nodes' upload part size (S3's smallest)
MAX_REPO_BYTES = 9_000_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres,
            seaweedfs: SeaweedFS) -> Iterator[Cluster]:
    nodes = start_cluster(tmp_path_factory.mktemp("pushstream"), postgres, seaweedfs,
                          ARTIFACTD_S3_UPLOAD_PART_BYTES=str(PART),
                          ARTIFACTD_MAX_REPO_BYTES=str(MAX_REPO_BYTES),
                          ARTIFACTD_MAINTENANCE_INTERVAL="0")
    yield nodes
    nodes.stop()


def _cache_dir(repo: Repo) -> Path:
    """The s3 store's cache directory of ``repo`` (two shard levels: repostore.path)."""
    return repo.server.data_dir / "repos" / repo.id[:2] / repo.id[2:4] / f"{repo.id}.git"


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _listed_packs(cluster: Cluster, repo_id: str) -> set[str]:
    engine = make_engine(cluster.database_url)
    try:
        with engine.connect() as conn:
            return {str(name) for name in conn.execute(sqlalchemy.text(
                "SELECT pack FROM s3_repo_packs WHERE repo_id = :id"), {"id": repo_id}).scalars()}
    finally:
        engine.dispose()


def _trailer(cluster: Cluster, name: str) -> str:
    """The trailing checksum of the bucket's ``packs/<name>.pack``, in hex."""
    body = cluster.store.client().get_object(Bucket=cluster.bucket, Key=f"packs/{name}.pack",
                                             Range="bytes=-20")["Body"].read()
    return bytes(body).hex()


def _uploads_in_flight(cluster: Cluster) -> list[str]:
    answer = cluster.store.client().list_multipart_uploads(Bucket=cluster.bucket)
    return [str(upload["Key"]) for upload in answer.get("Uploads", [])]


def _metric(node: Server, series: str) -> float:
    return node.metric(series)


def _push(git: Git, repo: Repo, remote: str, work: Path, check: bool = True
          ) -> subprocess.CompletedProcess[str]:
    return git.run("-c", bearer(repo.token), "push", "-q", remote, "main", cwd=work, check=check,
                   timeout=300)


def _fsck_clone(git: Git, repo: Repo, remote: str, target: Path) -> None:
    git.run("-c", bearer(repo.token), "clone", "-q", remote, str(target), timeout=300)
    git.run("fsck", "--strict", cwd=target)


def test_a_pack_larger_than_a_part_is_streamed_and_served_by_the_other_node(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, _b = cluster.nodes
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    data = os.urandom(PART + PART // 4)  # two parts
    head = git.new_work(tmp_path / "w", {"data.bin": data, "README.md": "streamed\n"})
    streamed_before = _metric(a, 'artifactd_s3_push_packs_total{upload="streamed"}')
    _push(git, repo, repo.remote, tmp_path / "w")
    assert _metric(a, 'artifactd_s3_push_packs_total{upload="streamed"}') == streamed_before + 1
    # Stored under the upload's own name, not the pack's checksum: the bytes that arrived.
    (name,) = _listed_packs(cluster, repo.id)
    assert _trailer(cluster, name) != name
    assert {f"packs/{name}.pack", f"packs/{name}.idx"} <= cluster.bucket_keys()
    # The pushing node's cache holds it under that name, and git reads it there.
    pack_dir = _cache_dir(repo) / "objects" / "pack"
    assert (pack_dir / f"pack-{name}.idx").is_file()
    assert not list(pack_dir.glob("*.keep"))
    git.run("fsck", "--strict", cwd=_cache_dir(repo))
    # The other node downloads it and serves it.
    _fsck_clone(git, repo, cluster.remote(repo, 1), tmp_path / "clone")
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "clone") == head
    assert (tmp_path / "clone" / "data.bin").read_bytes() == data
    assert not _uploads_in_flight(cluster)
    # A push on top through the other node, fetched through the first one.
    head = git.commit_files(tmp_path / "w", {"more.txt": "more\n"}, "more")
    _push(git, repo, cluster.remote(repo, 1), tmp_path / "w")
    _fsck_clone(git, repo, repo.remote, tmp_path / "clone2")
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "clone2") == head
    # git's repack (what maintenance runs) takes a pack named otherwise than its checksum.
    shutil.copytree(_cache_dir(repo), tmp_path / "copy.git")
    git.run("repack", "-a", "-d", "-q", cwd=tmp_path / "copy.git")
    assert not (tmp_path / "copy.git" / "objects" / "pack" / f"pack-{name}.pack").exists()
    git.run("fsck", "--strict", cwd=tmp_path / "copy.git")


def test_a_thin_pack_is_uploaded_as_index_pack_completed_it(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, _b = cluster.nodes
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    base = os.urandom(PART // 5)
    git.new_work(tmp_path / "w", {"base.bin": base})
    _push(git, repo, repo.remote, tmp_path / "w")
    first = _listed_packs(cluster, repo.id)
    # The changed base.bin goes as a delta against the blob the server has: a thin pack,
    # which index-pack completes with that base (another checksum than what arrived).
    fallback_before = _metric(a, 'artifactd_s3_push_packs_total{upload="fallback"}')
    aborted_before = _metric(a, "artifactd_s3_push_uploads_aborted_total")
    head = git.commit_files(tmp_path / "w", {"base.bin": base + b"appended\n",
                                             "new.bin": os.urandom(PART + PART // 4)}, "thin")
    _push(git, repo, repo.remote, tmp_path / "w")
    assert _metric(a, 'artifactd_s3_push_packs_total{upload="fallback"}') == fallback_before + 1
    _wait_for(lambda: _metric(a, "artifactd_s3_push_uploads_aborted_total") > aborted_before,
              "the streamed upload to be aborted")
    (added,) = _listed_packs(cluster, repo.id) - first
    assert _trailer(cluster, added) == added  # the completed pack, under its checksum
    assert not _uploads_in_flight(cluster)
    _fsck_clone(git, repo, cluster.remote(repo, 1), tmp_path / "clone")
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "clone") == head


def _pack_of(git: Git, work: Path) -> bytes:
    return subprocess.run(["git", "pack-objects", "--stdout", "--revs", "-q"], cwd=work,
                          env=git.env, input=b"main\n", capture_output=True, check=True).stdout


def test_an_interrupted_push_aborts_its_upload_and_lists_nothing(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, _b = cluster.nodes
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    head = git.new_work(tmp_path / "w", {"data.bin": os.urandom(PART + PART // 2)})
    pack = _pack_of(git, tmp_path / "w")
    line = f"{'0' * 40} {head} refs/heads/main\0report-status side-band-64k agent=test\n"
    commands = f"{len(line) + 4:04x}{line}0000".encode()
    keys_before = cluster.bucket_keys()
    aborted_before = _metric(a, "artifactd_s3_push_uploads_aborted_total")

    class ClientGone(Exception):
        pass

    def body() -> Iterator[bytes]:
        yield commands
        for offset in range(0, PART + (512 << 10), 256 << 10):
            yield pack[offset:offset + (256 << 10)]
        # The node has started uploading parts of this pack: now the client goes away.
        _wait_for(lambda: bool(_uploads_in_flight(cluster)), "a multipart upload to start")
        raise ClientGone

    with pytest.raises(ClientGone), httpx.Client(timeout=60) as client:
        client.post(f"{repo.remote}/git-receive-pack", content=body(), headers={
            "Authorization": f"Bearer {repo.token}",
            "Content-Type": "application/x-git-receive-pack-request"})
    _wait_for(lambda: not _uploads_in_flight(cluster), "the upload to be aborted")
    _wait_for(lambda: _metric(a, "artifactd_s3_push_uploads_aborted_total") > aborted_before,
              "the abort to be counted")
    assert cluster.bucket_keys() == keys_before
    assert _listed_packs(cluster, repo.id) == set()
    listed = git.run("-c", bearer(repo.token), "ls-remote", repo.remote, cwd=tmp_path).stdout
    assert listed.strip() == ""


def test_a_push_over_the_limit_through_a_cold_node_is_refused_and_its_upload_aborted(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    first = git.new_work(tmp_path / "w", {"small.txt": "small\n"})
    _push(git, repo, repo.remote, tmp_path / "w")
    shutil.rmtree(b.data_dir / "repos", ignore_errors=True)  # node b: a cold cache
    keys_before = cluster.bucket_keys()
    aborted_before = _metric(b, "artifactd_s3_push_uploads_aborted_total")
    git.commit_files(tmp_path / "w", {"big.bin": os.urandom(MAX_REPO_BYTES + (1 << 20))}, "big")
    result = _push(git, repo, cluster.remote(repo, 1), tmp_path / "w", check=False)
    assert result.returncode != 0, result.stderr
    assert "Storage limit reached" in result.stderr or "exceeds maximum allowed size" \
        in result.stderr, result.stderr
    _wait_for(lambda: _metric(b, "artifactd_s3_push_uploads_aborted_total") > aborted_before,
              "the streamed upload to be aborted")
    _wait_for(lambda: not _uploads_in_flight(cluster), "no upload left in flight")
    assert cluster.bucket_keys() == keys_before
    listed = git.out("-c", bearer(repo.token), "ls-remote", repo.remote, "refs/heads/main")
    assert listed.split()[0] == first
    with a.client() as c:
        assert c.get(f"/repos/{repo.name}").json()["result"]["size"] < MAX_REPO_BYTES


def test_a_node_killed_once_its_streamed_pack_is_stored_leaves_all_of_the_push_or_none(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    """kill -9 of the node taking a streamed push once the pack is a complete object in the
    bucket (its SQL commit just before or just after): through the other node the push is all
    there or not at all, and a fresh clone is fsck-clean."""
    a, b = cluster.nodes
    repo = create_repo(b, unique_name)
    git = Git(tmp_path / "home")
    first = git.new_work(tmp_path / "w", {"a.txt": "one\n"})
    _push(git, repo, cluster.remote(repo, 1), tmp_path / "w")
    data = os.urandom(PART + PART // 4)
    second = git.commit_files(tmp_path / "w", {"big.bin": data}, "big")
    keys = cluster.bucket_keys()
    pusher = subprocess.Popen(
        ["git", "-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main"],
        cwd=tmp_path / "w", env=git.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: any(k.endswith(".pack") for k in cluster.bucket_keys() - keys)
                  or pusher.poll() is not None, "the streamed pack in the bucket")
        assert a.process is not None
        a.process.kill()
        a.process.wait()
        pusher.communicate(timeout=60)
        listed = git.out("-c", bearer(repo.token), "ls-remote", cluster.remote(repo, 1),
                         "refs/heads/main").split()[0]
        assert listed in (first, second)
        if pusher.returncode == 0:  # acknowledged: it must be there
            assert listed == second
        _fsck_clone(git, repo, cluster.remote(repo, 1), tmp_path / "after")
        assert git.out("rev-parse", "HEAD", cwd=tmp_path / "after") == listed
        if listed == second:
            assert (tmp_path / "after" / "big.bin").read_bytes() == data
    finally:
        if pusher.poll() is None:
            pusher.kill()
        restart(a)
    assert git.out("-c", bearer(repo.token), "ls-remote", cluster.remote(repo, 0),
                   "refs/heads/main").split()[0] == listed
