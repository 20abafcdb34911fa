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


class Measured:
    """One server under test: started once, measured in several short turns."""

    def __init__(self, name: str, database_url: str | None = None, workers: int = 1) -> None:
        self.work = work_dir(f"backends-{name}-")
        self.server = start_server(self.work / "data", database_url=database_url,
                                   extra_env=UNLIMITED, args=("--workers", str(workers)))
        self.creates: list[int] = []
        self.non_2xx = 0
        self.gets: list[float] = []
        with self.client() as c:
            assert c.post(self.server.ns_url() + "/repos", json={"name": "target"}).status_code == 200

    def client(self) -> httpx.Client:
        return httpx.Client(headers={"Authorization": f"Bearer {self.server.token}"}, timeout=60)

    def turn(self, seconds: int, gets: int) -> None:
        with self.client() as c:
            def get(_i: int) -> None:
                assert c.get(self.server.ns_url() + "/repos/target").status_code == 200

            self.gets += time_calls(get, gets, warmup=20)
        creates = creates_concurrent(self.server.ns_url("throughput") + "/repos",
                                     self.server.token, seconds)
        self.creates.append(creates["creates_per_s"])
        self.non_2xx += creates["non_2xx"]

    def result(self) -> dict[str, Any]:
        return {"creates_per_s": round(sum(self.creates) / len(self.creates)),
                "creates_per_turn": self.creates, "non_2xx": self.non_2xx,
                "get": summary(self.gets)}

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    """Every server is started first and then measured in turns (a short creates burst and
    a run of GETs each), the order rotated every round, so that the shared machine's load
    swings fall on all of them alike instead of on whichever ran last."""
    rounds, seconds, gets = (1, 3, 100) if quick else (4, 5, 300)
    results: dict[str, Any] = {"machine": machine(), "rounds": rounds, "seconds": seconds}
    servers: dict[str, Measured] = {}
    postgres = DurablePostgres()
    try:
        servers["sqlite_1"] = Measured("sqlite1")
        servers["sqlite_2"] = Measured("sqlite2", workers=2)
        if postgres.available:
            postgres.start()
            servers["postgres_1"] = Measured("pg1", database_url=postgres.new_database())
        names = list(servers)
        for i in range(rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                servers[name].turn(seconds, gets)
        results.update({name: measured.result() for name, measured in servers.items()})
    finally:
        for measured in servers.values():
            measured.stop()
        if postgres.available:
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
             "client, sequential. The three servers are started first and measured in turns "
             f"({results.get('rounds', 1)} rounds of a {results.get('seconds', '?')} s creates burst and "
             "a run of GETs each, the order rotated every round), so the shared machine's load "
             "swings fall on all three alike; creates/s is the mean of the turns.", "",
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
