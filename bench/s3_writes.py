"""REST writes on the ``s3`` storage backend (issue 16) against ``local``, in the same run.

Both backends on one PostgreSQL (the suite's ``initdb``/``pg_ctl`` cluster); ``s3`` is two
nodes with separate caches on one SeaweedFS bucket. Measured, the three interleaved one
commit at a time (one keep-alive client per node), a REST commit of 10 small files (as
``bench.writes``):

- through a ``local`` node (the reference);
- through one ``s3`` node (its cache current: the pack uploaded, the refs swapped in SQL);
- through the two ``s3`` nodes in turn, so that each commit's node first brings its cache
  to the other's last commit (one pack downloaded) before it writes.

    python -m bench --only s3_writes [--quick]
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import httpx
from tests.harness import Postgres, Server
from tests.multinode import start_cluster, start_node
from tests.seaweed import SeaweedFS

from bench.common import UNLIMITED, Target, machine, summary, work_dir

NODE_ENV = {**UNLIMITED, "ARTIFACTD_MAINTENANCE_INTERVAL": "0"}


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:500]}")
    return dict(response.json()["result"])


def _ten_files(i: int) -> list[dict[str, str]]:
    return [{"op": "put", "path": f"dir{n % 3}/file{n}.txt", "content": f"commit {i} file {n}\n"}
            for n in range(10)]


class _Lane:
    """One repo written through ``servers`` in turn, one keep-alive client per server."""

    def __init__(self, servers: list[Server], name: str):
        self.name = name
        self.clients = [server.client() for server in servers]
        self.samples: list[float] = []
        _ok(self.clients[0].post("/repos", json={"name": name}))
        _ok(self.clients[0].post(f"/repos/{name}/commits", json={
            "branch": "main", "message": "start", "changes": _ten_files(-100)}))

    def commit(self, i: int, timed: bool = True) -> None:
        client = self.clients[i % len(self.clients)]
        started = time.perf_counter()
        _ok(client.post(f"/repos/{self.name}/commits", json={
            "branch": "main", "message": f"commit {i}", "changes": _ten_files(i)}))
        if timed:
            self.samples.append(time.perf_counter() - started)

    def close(self) -> None:
        for client in self.clients:
            client.close()


def run(quick: bool = False) -> dict[str, Any]:
    count = 20 if quick else 200
    base = work_dir("s3-writes-")
    pg, store = Postgres(), SeaweedFS()
    pg.start()
    store.start()
    servers: list[Server] = []
    try:
        local = start_node(base / "local", pg.new_database(), NODE_ENV)
        servers.append(local)
        cluster = start_cluster(base / "cluster", pg, store, **NODE_ENV)
        servers += cluster.nodes
        a, b = cluster.nodes
        results: dict[str, Any] = {"machine": machine(), "commits": count}
        lanes = {"local": _Lane([local], "local-commits"), "s3_one_node": _Lane([a], "s3-commits"),
                 "s3_two_nodes": _Lane([a, b], "s3-crossing")}
        try:
            for i in range(-5, count):  # interleaved: the machine's load hits every lane alike
                for lane in lanes.values():
                    lane.commit(i, timed=i >= 0)
        finally:
            for lane in lanes.values():
                lane.close()
        for key, lane in lanes.items():
            results[key] = summary(lane.samples)
        reference = results["local"]["p50_ms"]
        results["ratio_one_node"] = round(results["s3_one_node"]["p50_ms"] / reference, 2)
        results["ratio_two_nodes"] = round(results["s3_two_nodes"]["p50_ms"] / reference, 2)
        return results
    finally:
        for server in servers:
            server.stop()
        store.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def targets(results: dict[str, Any]) -> list[Target]:
    return [Target("s3 REST commit p50 / local (one node)", "reported",
                   f"{results['ratio_one_node']:.2f}x ({results['s3_one_node']['p50_ms']:.1f} ms)",
                   None)]


def render(results: dict[str, Any]) -> str:
    local = results["local"]
    one, two = results["s3_one_node"], results["s3_two_nodes"]
    lines = [
        f"Machine: {results['machine']}.",
        "Shared with seven other engineers' tests and benchmarks (load average often above 10",
        "on 2 cores), so absolute times are pessimistic; the three kinds of commit are",
        "interleaved one by one, so that the load hits them alike. Both backends on one",
        "PostgreSQL; `s3` is two nodes on one SeaweedFS bucket. "
        f"{results['commits']} REST commits of 10 small",
        "files to one branch per row, one keep-alive client per node. Run:",
        "`python -m bench --only s3_writes`.",
        "",
        "| commits through | p50 | p99 | ratio of p50 to local |", "|---|---|---|---|",
        f"| `local` | {local['p50_ms']} ms | {local['p99_ms']} ms | 1 |",
        f"| `s3`, one node | {one['p50_ms']} ms | {one['p99_ms']} ms | "
        f"{results['ratio_one_node']}x |",
        f"| `s3`, the two nodes in turn (each syncs the other's commit first) | {two['p50_ms']} ms "
        f"| {two['p99_ms']} ms | {results['ratio_two_nodes']}x |",
        "",
        "An `s3` commit is the `local` one plus its pack's upload (`.pack`, `.idx` and the pack's",
        "row, side by side), the cache's generation check and one PostgreSQL transaction (the",
        "compare-and-swap); through the other node, plus one pack download first.",
    ]
    return "\n".join(lines)
