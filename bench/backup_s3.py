"""Backup and restore of the ``s3`` repo store, against a plain S3 client, in the same run.

One node on PostgreSQL + SeaweedFS holds repos of random data and a fork of each (the fork
lists its parent's packs). Measured: ``artifactd backup DIR`` while the node serves (command
start-up included) against downloading the same distinct pack objects with boto3 (the floor:
the bytes once, no snapshot, no checksums), and ``artifactd restore`` into a new database and
bucket prefix against uploading those objects with boto3.

    python -m bench.backup_s3 [--quick] [--no-write]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

from tests.gitutil import Git, create_repo
from tests.harness import Postgres, artifactd_cmd
from tests.multinode import s3_env, start_cluster
from tests.seaweed import SeaweedFS
from tests.seed import push

from bench.common import UNLIMITED, Target, bench_main, machine, work_dir

TITLE = "Backup and restore (s3 repo store)"


def _timed(argv: list[str], env: dict[str, str]) -> float:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ARTIFACTD_", "AWS_"))}
    started = time.perf_counter()
    done = subprocess.run(argv, env={**base, **env}, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return elapsed


def run(quick: bool = False) -> dict[str, Any]:
    repos, megabytes = (4, 1) if quick else (20, 4)
    base = work_dir("backup-s3-")
    pg, store = Postgres(), SeaweedFS()
    pg.start()
    store.start()
    try:
        cluster = start_cluster(base / "src", pg, store, count=1, **UNLIMITED)
        node = cluster.nodes[0]
        git = Git(base / "home")
        for n in range(repos):
            repo = create_repo(node, f"data-{n}")
            work = base / f"work-{n}"
            git.new_work(work, {"data.bin": os.urandom(megabytes << 20)})
            push(git, repo, work, "HEAD:refs/heads/main")
            with node.client() as c:
                assert c.post(f"/repos/data-{n}/fork", json={"name": f"fork-{n}"}).status_code == 200
        env = {**s3_env(store, cluster.bucket), "ARTIFACTD_DATABASE_URL": cluster.database_url}
        backup_s = _timed([*artifactd_cmd(), "backup", str(base / "backup"), "--data-dir",
                           str(node.data_dir), "--json"], env)
        manifest = json.loads((base / "backup" / "manifest.json").read_text())

        client = store.client()
        keys = sorted(key for key in cluster.bucket_keys() if key.startswith("packs/"))
        plain = base / "plain"
        plain.mkdir()
        started = time.perf_counter()
        for key in keys:
            client.download_file(cluster.bucket, key, str(plain / key.replace("/", "_")))
        download_s = time.perf_counter() - started
        pack_bytes = sum(p.stat().st_size for p in plain.iterdir())
        copy_bucket = store.new_bucket("plain")
        started = time.perf_counter()
        for key in keys:
            client.upload_file(str(plain / key.replace("/", "_")), copy_bucket, key)
        upload_s = time.perf_counter() - started

        target = {**s3_env(store, store.new_bucket("restored"), ARTIFACTD_S3_PREFIX="r")}
        restore_s = _timed([*artifactd_cmd(), "restore", str(base / "backup"), "--data-dir",
                            str(base / "restored"), "--database-url", pg.new_database(), "--json"],
                           target)
        cluster.stop()
        return {"machine": machine(), "repos": repos, "forks": repos, "megabytes": megabytes,
                "pack_objects": len(keys), "pack_bytes": pack_bytes, "backup_s": backup_s,
                "download_s": download_s, "restore_s": restore_s, "upload_s": upload_s,
                "backup_files": manifest["files"], "backup_bytes": manifest["bytes"],
                "load_average": f"{os.getloadavg()[0]:.1f}"}
    finally:
        store.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def targets(r: dict[str, Any]) -> list[Target]:
    """No bound in the issue: the ratios to a plain S3 client, reported."""
    return [
        Target("s3 backup time / boto3 download of the packs", "reported",
               f"{r['backup_s'] / r['download_s']:.1f}x", None),
        Target("s3 restore time / boto3 upload of the packs", "reported",
               f"{r['restore_s'] / r['upload_s']:.1f}x", None),
    ]


def render(r: dict[str, Any]) -> str:
    return f"""`artifactd backup` of a serving `s3` node (PostgreSQL + SeaweedFS on loopback): {r['repos']}
repos of {r['megabytes']} MB of random data and a fork of each ({r['pack_objects']} pack objects,
{r['pack_bytes'] / 1e6:,.1f} MB; the forks list their parents' packs and add none). The floor is
a plain S3 client (boto3) moving the same distinct objects once, no snapshot, no checksums.
Times include the command's start-up (about 1 s of Python imports). The machine was shared
with other engineers' work (load average {r['load_average']} on 2 cores at the end): the ratios
are the point. What the backup adds over the floor: the command's start-up (it opens the
database and checks the bucket), the metadata snapshot, hashing every object as it is fetched,
and, for a directory, reading each file back and hashing it again before one `syncfs`.
`python -m bench.backup_s3`.

| | seconds | ratio to boto3 |
|---|---|---|
| boto3 download of the pack objects | {r['download_s']:.2f} | 1.0 |
| `artifactd backup DIR` ({r['backup_files']} files, {r['backup_bytes'] / 1e6:,.1f} MB, every pack once) | {r['backup_s']:.2f} | {r['backup_s'] / r['download_s']:.1f} |
| boto3 upload of the pack objects | {r['upload_s']:.2f} | 1.0 |
| `artifactd restore DIR` into a new database and bucket prefix (every blob hashed first) | {r['restore_s']:.2f} | {r['restore_s'] / r['upload_s']:.1f} |
"""


def main() -> None:
    bench_main(TITLE, run, render, __doc__)


if __name__ == "__main__":
    main()
