"""Two artifactd nodes on PostgreSQL + SeaweedFS (the ``s3`` backend): any node serves any repo.

Real components only: a PostgreSQL cluster and a SeaweedFS S3 gateway started by the suite,
two server processes with separate cache dirs, the git CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitutil import Git, bearer, create_repo
from tests.harness import Postgres
from tests.multinode import Cluster, start_cluster
from tests.seaweed import SeaweedFS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres,
            seaweedfs: SeaweedFS) -> Iterator[Cluster]:
    # A short pack grace, so that a test sees the sweep of unlisted packs happen.
    nodes = start_cluster(tmp_path_factory.mktemp("multinode"), postgres, seaweedfs,
                          ARTIFACTD_GC_GRACE_SECONDS="3")
    yield nodes
    nodes.stop()


def _fsck_clone(git: Git, remote: str, token: str, target: Path) -> str:
    git.run("-c", bearer(token), "clone", "-q", remote, str(target))
    git.run("fsck", "--strict", "--no-progress", cwd=target)
    return git.out("rev-parse", "HEAD", cwd=target)


def test_push_through_one_node_is_seen_through_the_other_at_once(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a = cluster.nodes[0]
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    first = git.new_work(tmp_path / "w", {"a.txt": "one\n"})
    git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main",
            cwd=tmp_path / "w")
    assert _fsck_clone(git, cluster.remote(repo, 1), repo.token, tmp_path / "c1") == first
    # Each push through B is seen by a fetch through A right after its acknowledgement.
    for round_ in range(3):
        sha = git.commit_files(tmp_path / "c1", {"a.txt": f"round {round_}\n"}, f"r{round_}")
        git.run("-c", bearer(repo.token), "push", "-q", "origin", "main", cwd=tmp_path / "c1")
        listed = git.out("-c", bearer(repo.token), "ls-remote", cluster.remote(repo, 0),
                         "refs/heads/main")
        assert listed.split()[0] == sha
    assert _fsck_clone(git, cluster.remote(repo, 0), repo.token, tmp_path / "c2") == sha
    # The data is in the bucket and the refs in SQL: no node's disk is the only copy.
    assert any(key.startswith("packs/") and key.endswith(".pack") for key in cluster.bucket_keys())


def test_racing_pushes_through_both_nodes_lose_nothing(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    """Clients push to one branch through alternating nodes, each retrying when refused: every
    acknowledged commit is in the final history, and refusals are git's stale-ref kind."""
    a = cluster.nodes[0]
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    git.new_work(tmp_path / "seed")
    git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main",
            cwd=tmp_path / "seed")
    clients, pushes_each = 4, 3
    acked: list[str] = []
    refusals: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        work = tmp_path / f"client{index}"
        remote = cluster.remote(repo, index % 2)
        git.run("-c", bearer(repo.token), "clone", "-q", remote, str(work))
        for push in range(pushes_each):
            for _attempt in range(40):
                git.run("-c", bearer(repo.token), "fetch", "-q", "origin", cwd=work)
                git.run("reset", "-q", "--hard", "origin/main", cwd=work)
                sha = git.commit_files(work, {f"c{index}-{push}.txt": "x\n"}, f"{index}/{push}")
                result = git.run("-c", bearer(repo.token), "push", "origin", "main", cwd=work,
                                 check=False)
                if result.returncode == 0:
                    with lock:
                        acked.append(sha)
                    break
                with lock:
                    refusals.append(result.stderr)
            else:
                raise AssertionError(f"client {index} never got a push in")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    errors: list[BaseException] = []
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(acked) == clients * pushes_each
    for stderr in refusals:  # git's own non-fast-forward, or our CAS's stale-ref refusal
        assert "fetch first" in stderr or "stale info" in stderr or "non-fast-forward" in stderr, \
            stderr
    final = tmp_path / "final"
    _fsck_clone(git, cluster.remote(repo, 1), repo.token, final)
    history = set(git.out("rev-list", "HEAD", cwd=final).split())
    assert set(acked) <= history


def test_content_routes_and_blob_reads_through_the_other_node(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    git.new_work(tmp_path / "w", {"docs/hello.txt": "hello from A\n"})
    git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main",
            cwd=tmp_path / "w")
    with b.client() as c:
        r = c.get(f"/repos/{repo.name}/raw/main/docs/hello.txt")
        assert r.status_code == 200, r.text
        assert r.text == "hello from A\n"
        r = c.get(f"/repos/{repo.name}/log", params={"ref": "main"})
        assert r.status_code == 200, r.text
    # A partial clone through B fetches blobs on demand (the blob fast path).
    git.run("-c", bearer(repo.token), "clone", "-q", "--filter=blob:none",
            cluster.remote(repo, 1), str(tmp_path / "partial"))
    assert (tmp_path / "partial" / "docs" / "hello.txt").read_text() == "hello from A\n"


def test_fork_copies_rows_and_outlives_its_deleted_parent(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
    parent = create_repo(a, f"{unique_name}-p")
    git = Git(tmp_path / "home")
    sha = git.new_work(tmp_path / "w", {"big.bin": os.urandom(200_000)})
    git.run("-c", bearer(parent.token), "push", "-q", cluster.remote(parent, 0), "main",
            cwd=tmp_path / "w")
    before = cluster.bucket_keys()
    with b.client() as c:
        r = c.post(f"/repos/{parent.name}/fork", json={"name": f"{unique_name}-f"})
        assert r.status_code == 200, r.text
        fork_token = r.json()["result"]["token"]
        fork_id = r.json()["result"]["id"]
        fork_remote = r.json()["result"]["remote"]
    # No byte copied (the sweep may remove packs of earlier refused pushes meanwhile).
    assert cluster.bucket_keys() - before == set()
    # The parent is deleted; a canary repo with a pack of its own is deleted after it. Once
    # the canary's pack is swept, the sweep has looked at the parent's packs too.
    canary = create_repo(a, f"{unique_name}-c")
    git.new_work(tmp_path / "canary", {"c.bin": os.urandom(50_000)})
    git.run("-c", bearer(canary.token), "push", "-q", cluster.remote(canary, 0), "main",
            cwd=tmp_path / "canary")
    canary_keys = cluster.bucket_keys() - before
    assert canary_keys
    with a.client() as c:
        assert c.delete(f"/repos/{parent.name}").status_code in (200, 202)
        assert c.delete(f"/repos/{canary.name}").status_code in (200, 202)
    deadline = time.monotonic() + 60
    while cluster.bucket_keys() & canary_keys:
        assert time.monotonic() < deadline, "the sweep never removed the canary's pack"
        time.sleep(0.5)
    listed = cluster.listed_keys(fork_id)
    assert listed and listed <= cluster.bucket_keys()
    for node in (0, 1):
        remote = fork_remote.replace(f":{a.port}/", f":{cluster.nodes[node].port}/") \
            .replace(f":{b.port}/", f":{cluster.nodes[node].port}/")
        assert _fsck_clone(git, remote, fork_token, tmp_path / f"fork{node}") == sha


def test_a_wiped_cache_is_rebuilt_from_the_bucket(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    sha = git.new_work(tmp_path / "w", {"data.bin": os.urandom(2_000_000)})
    git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main",
            cwd=tmp_path / "w")
    assert _fsck_clone(git, cluster.remote(repo, 1), repo.token, tmp_path / "warm") == sha
    # Another client clones through B while B's whole cache is wiped.
    racing = subprocess.Popen(
        ["git", "-c", bearer(repo.token), "clone", "-q", cluster.remote(repo, 1),
         str(tmp_path / "racing")], env=git.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for entry in (b.data_dir / "repos").iterdir():
        shutil.rmtree(entry, ignore_errors=True)
    racing.communicate(timeout=120)
    if racing.returncode == 0:  # it finished from open files, or from the rebuilt cache
        git.run("fsck", "--strict", "--no-progress", cwd=tmp_path / "racing")
    assert _fsck_clone(git, cluster.remote(repo, 1), repo.token, tmp_path / "cold") == sha
    with b.client() as c:
        assert c.get(f"/repos/{repo.name}/raw/main/data.bin").status_code == 200
