"""Database backends side by side: PostgreSQL vs SQLite, and SQLite with 1 vs 2 workers.

In one run, on the same machine, each server fresh:

- creates/s with ``wrk`` (2 threads, 16 connections) and GET ``/repos/:name`` p50 (one
  keep-alive client, sequential), against SQLite and against PostgreSQL with its default
  durability (``fsync`` and ``synchronous_commit`` on: the cluster is started without the
  test suite's speed-ups). Targets (issue 12): PostgreSQL creates/s at least 0.8x SQLite's,
  GET p50 at most 1.5x;
- SQLite creates/s with ``--workers 2`` against ``--workers 1``. Target: at least 1.0x.

    python -m bench.backends [--quick]
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

import httpx
from tests.harness import Postgres

from bench.common import UNLIMITED, Target, machine, start_server, summary, time_calls, work_dir
from bench.control_plane import creates_concurrent


class DurablePostgres(Postgres):
    """The harness's throwaway cluster, but with PostgreSQL's default durability."""

    def start(self) -> None:
        assert self.bin is not None
        import os

        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "pg.log"), "-w",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                        "-c max_connections=300", "start")


def measure(name: str, seconds: int, gets: int, database_url: str | None = None,
            workers: int = 1) -> dict[str, Any]:
    work = work_dir(f"backends-{name}-")
    server = start_server(work / "data", database_url=database_url, extra_env=UNLIMITED,
                          args=("--workers", str(workers)))
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {server.token}"}, timeout=60) as c:
            assert c.post(server.ns_url() + "/repos", json={"name": "target"}).status_code == 200

            def get(_i: int) -> None:
                assert c.get(server.ns_url() + "/repos/target").status_code == 200

            latency = summary(time_calls(get, gets, warmup=20))
        creates = creates_concurrent(server.ns_url("throughput") + "/repos", server.token, seconds)
        return {"creates_per_s": creates["creates_per_s"], "non_2xx": creates["non_2xx"],
                "get": latency}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    seconds, gets = (3, 100) if quick else (15, 1000)
    results: dict[str, Any] = {"machine": machine()}
    results["sqlite_1"] = measure("sqlite1", seconds, gets)
    results["sqlite_2"] = measure("sqlite2", seconds, gets, workers=2)
    postgres = DurablePostgres()
    if postgres.available:
        postgres.start()
        try:
            results["postgres_1"] = measure("pg1", seconds, gets, database_url=postgres.new_database())
        finally:
            postgres.stop()
    return results


def _ratios(results: dict[str, Any]) -> dict[str, float]:
    lite1, lite2 = results["sqlite_1"], results["sqlite_2"]
    found = {"workers": lite2["creates_per_s"] / max(lite1["creates_per_s"], 1)}
    if "postgres_1" in results:
        pg = results["postgres_1"]
        found["pg_creates"] = pg["creates_per_s"] / max(lite1["creates_per_s"], 1)
        found["pg_get"] = pg["get"]["p50_ms"] / max(lite1["get"]["p50_ms"], 0.001)
    return found


def targets(results: dict[str, Any]) -> list[Target]:
    ratio = _ratios(results)
    lite1, lite2 = results["sqlite_1"], results["sqlite_2"]
    found = [Target("SQLite creates/s, --workers 2 vs --workers 1", ">= 1.0x",
                    f"{ratio['workers']:.2f}x ({lite2['creates_per_s']} vs {lite1['creates_per_s']}/s)",
                    ratio["workers"] >= 1.0)]
    if "pg_creates" in ratio:
        pg = results["postgres_1"]
        found += [
            Target("PostgreSQL (default durability) creates/s vs SQLite", ">= 0.8x",
                   f"{ratio['pg_creates']:.2f}x ({pg['creates_per_s']} vs {lite1['creates_per_s']}/s)",
                   ratio["pg_creates"] >= 0.8),
            Target("PostgreSQL GET p50 vs SQLite", "<= 1.5x",
                   f"{ratio['pg_get']:.2f}x ({pg['get']['p50_ms']} vs {lite1['get']['p50_ms']} ms)",
                   ratio["pg_get"] <= 1.5),
        ]
    return found


def render(results: dict[str, Any]) -> str:
    rows = [("SQLite, `--workers 1` (reference)", "sqlite_1"), ("SQLite, `--workers 2`", "sqlite_2"),
            ("PostgreSQL, default durability, `--workers 1`", "postgres_1")]
    lines = [f"Command: `python -m bench.backends`. Machine: {results['machine']}.", "",
             "Creates: `wrk`, 2 threads, 16 connections. GET `/repos/:name`: one keep-alive "
             "client, sequential. Each server fresh, in the same run.", "",
             "| server | creates/s | GET p50 (ms) | GET p99 (ms) |", "|---|---|---|---|"]
    for label, key in rows:
        if key in results:
            r = results[key]
            lines.append(f"| {label} | {r['creates_per_s']} | {r['get']['p50_ms']} | {r['get']['p99_ms']} |")
    ratio = _ratios(results)
    lines += ["", f"`--workers 2` vs 1 on SQLite: **{ratio['workers']:.2f}x** (target at least 1.0x)."]
    if "pg_creates" in ratio:
        lines.append(f"PostgreSQL vs SQLite: creates **{ratio['pg_creates']:.2f}x** (target at least "
                     f"0.8x), GET p50 **{ratio['pg_get']:.2f}x** (target at most 1.5x).")
    else:
        lines.append("PostgreSQL: not installed on this machine, not measured.")
    return "\n".join(lines)


if __name__ == "__main__":
    out = run("--quick" in sys.argv)
    print(out)
    print(render(out))
