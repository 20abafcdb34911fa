"""Two (or more) artifactd nodes sharing one PostgreSQL database and one SeaweedFS bucket.

Each node has a data dir of its own (its cache); a repo created through one is reached
through another by the same remote URL with the other node's port.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy

from artifactd.storage.db import make_engine
from tests.gitutil import Repo
from tests.harness import Postgres, Server, free_port
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
    nodes = [start_node(base / f"node{i}", database_url, env) for i in range(count)]
    return Cluster(nodes, bucket, store, database_url)


def start_node(data_dir: Path, database_url: str | None, env: dict[str, str]) -> Server:
    """``start_server``, patient: a node also imports boto3 and checks its bucket, which on a
    loaded 2-core machine can take longer than the harness's 30 s."""
    server = Server(data_dir=data_dir, port=free_port(), env={
        **{k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")},
        **({"ARTIFACTD_DATABASE_URL": database_url} if database_url else {}), **env})
    edit = server.new_api_token("edit")
    server.account_id, server.token = edit["account_id"], edit["token"]
    server.read_token = server.new_api_token("read")["token"]
    restart(server)
    return server


def restart(server: Server, seconds: float = 180) -> None:
    """Start (or start again) a node, waiting while its process lives."""
    try:
        server.start()
        return
    except RuntimeError:
        if server.process is None or server.process.poll() is not None:
            raise
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{server.url}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"node did not start:\n{server.log_text()}")
