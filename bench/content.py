"""Content-route benchmark: latency and throughput of the read routes on one warm repo.

The repo is ``bench.synth``'s ``small`` preset (1,000 commits, ~10 MB; ``tiny`` with
``--quick``), generated straight into a running server's data dir. Measured over HTTP
against one worker:

- sequential latency (p50/p99) of ``file``, ``commit``, ``tree``, ``blob``, ``raw`` and
  ``log`` (50 commits), one keep-alive client, next to ``GET /repos/:name`` (same auth and
  HTTP stack, no git) as the floor;
- throughput of ``file`` and ``commit`` with ``wrk`` (1 thread, 4 connections: C, so the
  load generator leaves the CPU to the server);
- in-process, the cost of one ``file`` lookup through each backend that could serve it: the
  server's ``ObjectReader`` (libgit2 through pygit2, what the routes use), a pooled
  ``cat-file --batch-command`` (what they used before), and a git process per request.

    python -m bench.content [--quick] [--no-write]
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from artifactd.storage.catfile import CatFilePool
from artifactd.storage.gitrunner import GitRunner
from artifactd.storage.objectreader import ObjectReader
from bench.common import (
    Target,
    bench_main,
    machine,
    start_server,
    summary,
    time_calls,
    work_dir,
)
from bench.synth import PRESETS, generate, size_bytes

TARGET_P50_MS = 5.0
TARGET_RPS = 300


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def _wrk(url: str, token: str, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", "-c4", f"-d{seconds}s", "--latency", "-H", f"Authorization: Bearer {token}", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    factor = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": round(rps, 1),
        "p50_ms": round(float(p50.group(1)) * factor[p50.group(2)], 3) if p50 else float("nan"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def _backends(git_dir: Path, data_dir: Path, path: str, count: int) -> dict[str, float]:
    """Microseconds per `file` lookup (resolve ref + path, read the blob) for each backend."""
    results: dict[str, float] = {}

    async def pooled() -> float:
        pool = CatFilePool(GitRunner(data_dir))
        try:
            async def one() -> None:
                [(info, _)] = await pool.run(git_dir, [("info", f"refs/heads/main^{{commit}}:{path}")])
                assert info is not None
                await pool.run(git_dir, [("contents", info.sha)])
            for _ in range(20):
                await one()
            started = time.perf_counter()
            for _ in range(count):
                await one()
            return (time.perf_counter() - started) / count
        finally:
            pool.close()
            await asyncio.sleep(0.2)  # let the loop reap the closed processes

    results["catfile_pool_us"] = round(asyncio.run(pooled()) * 1e6, 1)
    reader = ObjectReader()

    def lookup() -> None:
        [(info, _)] = reader.read(git_dir, [("info", f"refs/heads/main^{{commit}}:{path}")])
        assert info is not None
        reader.read(git_dir, [("contents", info.sha)])

    for _ in range(20):
        lookup()
    started = time.perf_counter()
    for _ in range(count):
        lookup()
    results["object_reader_us"] = round((time.perf_counter() - started) / count * 1e6, 1)
    reader.close()
    spawn_count = max(5, count // 20)
    started = time.perf_counter()
    for _ in range(spawn_count):
        subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "blob", f"main:{path}"],
                       capture_output=True, check=True)
    results["process_per_request_us"] = round((time.perf_counter() - started) / spawn_count * 1e6, 1)
    return results


def run(quick: bool = False) -> dict[str, Any]:
    base = work_dir("content-")
    # Content reads count against the control-plane rate limit; the load test must not hit it.
    server = start_server(base / "data", extra_env={"ARTIFACTD_RATE_LIMIT_CONTROL": "100000000/10s"})
    try:
        with server.client() as c:
            created = c.post("/repos", json={"name": "bench-content"}).json()["result"]
        repo_id = created["id"]
        git_dir = server.data_dir / "repos" / repo_id[:2] / f"{repo_id}.git"
        git_dir.parent.mkdir(parents=True, exist_ok=True)
        spec = PRESETS["tiny" if quick else "small"]
        generate(spec, git_dir)
        head = _git(git_dir, "rev-parse", "main")
        tree = _git(git_dir, "rev-parse", "main^{tree}")
        path = next(line.split("\t", 1)[1] for line in _git(git_dir, "ls-tree", "-r", "main").splitlines()
                    if line.split()[1] == "blob" and line.endswith(".py"))
        blob = _git(git_dir, "rev-parse", f"main:{path}")
        blob_size = int(_git(git_dir, "cat-file", "-s", blob))
        routes = {
            "repo (floor)": "/repos/bench-content",  # GET /repos/:name: auth + HTTP, no git
            "file": f"/repos/bench-content/file?ref=main&path={path}",
            "commit": f"/repos/bench-content/commit/{head}",
            "tree": f"/repos/bench-content/tree/{tree}",
            "blob": f"/repos/bench-content/blob/{blob}",
            "raw": f"/repos/bench-content/raw/main/{path}",
            "log": "/repos/bench-content/log?limit=50",
        }
        count = 60 if quick else 400
        latency: dict[str, dict[str, float]] = {}
        with server.client() as c:
            for name, url in routes.items():
                def call(_i: int, url: str = url) -> None:
                    r = c.get(url)
                    assert r.status_code == 200, r.text
                latency[name] = summary(time_calls(call, count if name != "log" else count // 2,
                                                   warmup=10))
        seconds = 3 if quick else 10
        throughput = {
            name: _wrk(server.ns_url() + routes[name], server.token, seconds) for name in ("file", "commit")
        }
        backends = _backends(git_dir, server.data_dir, path, 300 if quick else 3000)
        return {
            "machine": machine(),
            "repo": {"preset": "tiny" if quick else "small", "commits": spec.commits,
                     "bytes": size_bytes(git_dir), "file_path": path, "file_bytes": blob_size},
            "latency": latency,
            "throughput": throughput,
            "backends_per_file_lookup": backends,
            "targets": {"p50_ms": TARGET_P50_MS, "rps": TARGET_RPS},
        }
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def targets(results: dict[str, Any]) -> list[Target]:
    goal = results["targets"]
    out = []
    for route in ("file", "commit"):
        p50 = results["latency"][route]["p50_ms"]
        out.append(Target(f"`{route}` p50", f"< {goal['p50_ms']:g} ms", f"{p50:.2f} ms", p50 < goal["p50_ms"]))
        rps = results["throughput"][route]["rps"]
        out.append(Target(f"`{route}` requests/s, one worker", f">= {goal['rps']}", f"{rps:.0f}", rps >= goal["rps"]))
    return out


def render(results: dict[str, Any]) -> str:
    repo = results["repo"]
    lat = results["latency"]
    thr = results["throughput"]
    back = results["backends_per_file_lookup"]
    rows = "\n".join(
        f"| `{name}` | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['n']} |" for name, v in lat.items()
    )
    ok = all(lat[n]["p50_ms"] < TARGET_P50_MS and thr[n]["rps"] >= TARGET_RPS for n in ("file", "commit"))
    return f"""Reads of one warm repo (`bench.synth` preset `{repo['preset']}`: {repo['commits']} commits,
{repo['bytes'] / 1e6:.1f} MB; the file read is `{repo['file_path']}`, {repo['file_bytes']} bytes),
one server worker, SQLite. `python -m bench.content`.

Sequential latency, one keep-alive client (milliseconds, over HTTP, API-token check included;
`repo (floor)` is `GET /repos/:name`, the same authentication and HTTP path with no git):

| route | p50 | p99 | requests |
|---|---|---|---|
{rows}

Throughput with `wrk -t1 -c4` (the load generator shares the 2 cores with the server):

| route | requests/s | wrk p50 (ms) | non-2xx |
|---|---|---|---|
| `file` | {thr['file']['rps']:.0f} | {thr['file']['p50_ms']:.2f} | {thr['file']['non_2xx']} |
| `commit` | {thr['commit']['rps']:.0f} | {thr['commit']['p50_ms']:.2f} | {thr['commit']['non_2xx']} |

Target: `file` and `commit` p50 under {TARGET_P50_MS:g} ms and at least {TARGET_RPS} requests/s
on one worker: **{'met' if ok else 'NOT met'}**.

Backend cost of one `file` lookup (resolve `main:<path>`, read the blob), in process, no HTTP
(microseconds per lookup):

| backend | µs |
|---|---|
| `ObjectReader`, libgit2 in process (used) | {back['object_reader_us']} |
| pooled `git cat-file --batch-command` (before) | {back['catfile_pool_us']} |
| a `git cat-file` process per request | {back['process_per_request_us']} |

The reader does the lookups in process on an open repository (kept in an LRU), on the event
loop: no pipe round trip, no process to start on a repo's first read, no thread hop (which
would cost about as much as the lookups). Blobs over 1 MiB still stream from a `git
cat-file` of their own, so no large read holds the loop.

Noise: the machine has 2 cores shared with other work and with the load generator; runs
vary by about ±20%.
"""


if __name__ == "__main__":
    bench_main("Content routes", run, render, __doc__)
