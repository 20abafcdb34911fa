"""Two (or more) artifactd nodes sharing one PostgreSQL database and one SeaweedFS bucket.

Each node has a data dir of its own (its cache); a repo created through one is reached
through another by the same remote URL with the other node's port.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy

from artifactd.storage.db import make_engine
from tests.gitutil import Repo
from tests.harness import Postgres, Server, start_server
from tests.seaweed import SeaweedFS


def s3_env(store: SeaweedFS, bucket: str, **extra: str) -> dict[str, str]:
    return {
        **store.env(),
        "ARTIFACTD_STORAGE_BACKEND": "s3",
        "ARTIFACTD_S3_ENDPOINT_URL": store.endpoint_url,
        "ARTIFACTD_S3_BUCKET": bucket,
        "ARTIFACTD_S3_REGION": store.region,
        **extra,
    }


@dataclass
class Cluster:
    nodes: list[Server]
    bucket: str
    store: SeaweedFS
    database_url: str

    def remote(self, repo: Repo, node: int) -> str:
        """The repo's remote URL through node ``node``."""
        return repo.remote.replace(f":{repo.server.port}/", f":{self.nodes[node].port}/")

    def bucket_keys(self) -> set[str]:
        client = self.store.client()
        keys: set[str] = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys.update(item["Key"] for item in page.get("Contents", []))
        return keys

    def listed_keys(self, repo_id: str) -> set[str]:
        """The bucket keys of the packs the repo lists, read from the shared database."""
        engine = make_engine(self.database_url)
        try:
            with engine.connect() as conn:
                names = conn.execute(sqlalchemy.text(
                    "SELECT pack FROM s3_repo_packs WHERE repo_id = :id"), {"id": repo_id}).scalars()
                return {f"packs/{name}{suffix}" for name in names for suffix in (".pack", ".idx")}
        finally:
            engine.dispose()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(base: Path, pg: Postgres, store: SeaweedFS, count: int = 2,
                  **extra: str) -> Cluster:
    database_url = pg.new_database()
    bucket = store.new_bucket()
    env = s3_env(store, bucket, **extra)
    nodes = [start_server(base / f"node{i}", database_url=database_url, extra_env=env)
             for i in range(count)]
    return Cluster(nodes, bucket, store, database_url)
