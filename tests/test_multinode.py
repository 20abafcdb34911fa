"""Two artifactd nodes on PostgreSQL + SeaweedFS (the ``s3`` backend): any node serves any repo.

Real components only: a PostgreSQL cluster and a SeaweedFS S3 gateway started by the suite,
two server processes with separate cache dirs, the git CLI.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gitutil import Git, bearer, create_repo
from tests.harness import Postgres
from tests.multinode import Cluster, start_cluster
from tests.seaweed import SeaweedFS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres,
            seaweedfs: SeaweedFS) -> Iterator[Cluster]:
    nodes = start_cluster(tmp_path_factory.mktemp("multinode"), postgres, seaweedfs)
    yield nodes
    nodes.stop()


def _fsck_clone(git: Git, remote: str, token: str, target: Path) -> str:
    git.run("-c", bearer(token), "clone", "-q", remote, str(target))
    git.run("fsck", "--strict", "--no-progress", cwd=target)
    return git.out("rev-parse", "HEAD", cwd=target)


def test_push_through_one_node_is_seen_through_the_other_at_once(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
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
