"""Writes without a git client (issue 13): REST commits and merge dry runs, one worker.

- latency of a REST commit of 10 small files (sequential, one keep-alive client), against the
  same commit made with the git CLI in the same run (clone, commit, push over smart HTTP);
- throughput of REST commits across distinct repos (4 client threads), and the server's CPU
  time per commit (its own and its git children's, maintenance included, from /proc), which a
  loaded machine changes much less than the wall clock;
- latency of a merge dry run (two branches with one change each) on a repo of 10,000 files
  (1,000 with ``--quick``), pushed once with git.

    python -m bench.writes [--quick] [--no-write]
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from tests.gitutil import Git

from bench.common import (
    UNLIMITED,
    Target,
    bench_main,
    machine,
    start_server,
    summary,
    time_calls,
    work_dir,
)

TARGET_COMMIT_P50_MS = 20.0
TARGET_COMMITS_PER_S = 100.0
TARGET_MERGE_P50_MS = 100.0


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:500]}")
    return dict(response.json()["result"])


def _ten_files(i: int) -> list[dict[str, str]]:
    return [{"op": "put", "path": f"dir{n % 3}/file{n}.txt", "content": f"commit {i} file {n}\n"}
            for n in range(10)]


def _create(client: httpx.Client, name: str) -> dict[str, Any]:
    return _ok(client.post("/repos", json={"name": name}))


def _rest_commits(client: httpx.Client, count: int) -> dict[str, float]:
    _create(client, "latency")
    _ok(client.post("/repos/latency/commits", json={
        "branch": "main", "message": "start", "changes": _ten_files(-100)}))

    def one(i: int) -> None:
        _ok(client.post("/repos/latency/commits", json={
            "branch": "main", "message": f"commit {i}", "changes": _ten_files(i)}))

    return summary(time_calls(one, count))


def _git_cli_commits(client: httpx.Client, base: Path, count: int) -> dict[str, float]:
    repo = _create(client, "cli-reference")
    git = Git(base / "git-home")
    auth = f"http.extraHeader=Authorization: Bearer {repo['token']}"
    seed = base / "seed"
    git.new_work(seed)
    git.run("-c", auth, "push", "-q", repo["remote"], "HEAD:refs/heads/main", cwd=seed)

    def one(i: int) -> None:
        work = base / f"cli-{i + 10}"
        git.run("-c", auth, "clone", "-q", repo["remote"], str(work))
        for n in range(10):
            path = work / f"dir{n % 3}" / f"file{n}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"commit {i} file {n}\n")
        git.run("add", "-A", cwd=work)
        git.run("commit", "-q", "-m", f"commit {i}", cwd=work)
        git.run("-c", auth, "push", "-q", "origin", "HEAD:main", cwd=work)

    return summary(time_calls(one, count, warmup=1))


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and its waited-for children (git) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _throughput(server_url: str, headers: dict[str, str], repos: int, per_repo: int,
                pid: int) -> tuple[float, float]:
    """(commits/s, server CPU ms per commit): the second does not depend on what else the
    machine runs, so it says what one worker with a core of its own would do."""
    with httpx.Client(base_url=server_url, headers=headers, timeout=60) as client:
        for r in range(repos):
            _create(client, f"tp-{r}")

    def worker(r: int) -> None:
        with httpx.Client(base_url=server_url, headers=headers, timeout=60) as client:
            for i in range(per_repo):
                _ok(client.post(f"/repos/tp-{r}/commits", json={
                    "branch": "main", "message": f"c{i}", "changes": _ten_files(i)}))

    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(repos)))
    count = repos * per_repo
    return count / (time.perf_counter() - started), (_cpu_seconds(pid) - cpu) * 1000 / count


def _merge_dry_run(client: httpx.Client, base: Path, files: int, count: int) -> dict[str, float]:
    repo = _create(client, "merge-big")
    git = Git(base / "merge-home")
    work = base / "merge-work"
    work.mkdir()
    for n in range(files):
        path = work / f"d{n % 100}" / f"f{n}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {n}\n" * 4)
    git.run("init", "-q", "-b", "main", cwd=work)
    git.run("add", "-A", cwd=work)
    git.run("commit", "-q", "-m", "big", cwd=work)
    auth = f"http.extraHeader=Authorization: Bearer {repo['token']}"
    git.run("-c", auth, "push", "-q", repo["remote"], "HEAD:refs/heads/main", cwd=work)
    _ok(client.post("/repos/merge-big/commits", json={
        "branch": "topic", "base": "main", "message": "topic",
        "changes": [{"op": "put", "path": "d1/f1.txt", "content": "topic\n"}]}))
    _ok(client.post("/repos/merge-big/commits", json={
        "branch": "main", "message": "main moves",
        "changes": [{"op": "put", "path": "d2/f2.txt", "content": "main\n"}]}))

    def one(_i: int) -> None:
        result = _ok(client.post("/repos/merge-big/merge", json={"head": "topic",
                                                                 "dry_run": True}))
        assert result["mergeable"] is True

    return summary(time_calls(one, count))


def run(quick: bool = False) -> dict[str, Any]:
    base = work_dir("writes-")
    server = start_server(base / "data", extra_env=UNLIMITED)
    headers = {"Authorization": f"Bearer {server.token}"}
    try:
        with httpx.Client(base_url=server.ns_url(), headers=headers, timeout=60) as client:
            rest = _rest_commits(client, 30 if quick else 200)
            cli = _git_cli_commits(client, base, 3 if quick else 20)
            files = 1_000 if quick else 10_000
            merge = _merge_dry_run(client, base, files, 10 if quick else 50)
        assert server.process is not None
        rate, cpu_ms = _throughput(server.ns_url(), headers, 4 if quick else 8,
                                   10 if quick else 50, server.process.pid)
    finally:
        server.stop()
    return {"rest_commit": rest, "git_cli_commit": cli, "commits_per_s": round(rate, 1),
            "server_cpu_ms_per_commit": round(cpu_ms, 2),
            "merge_dry_run": merge, "merge_files": files, "quick": quick, "machine": machine(),
            "cpus": os.cpu_count()}


def targets(results: dict[str, Any]) -> list[Target]:
    rest = results["rest_commit"]["p50_ms"]
    merge = results["merge_dry_run"]["p50_ms"]
    rate = results["commits_per_s"]
    return [
        Target("REST commit of 10 small files, p50", f"< {TARGET_COMMIT_P50_MS:g} ms",
               f"{rest:.1f} ms", rest < TARGET_COMMIT_P50_MS),
        Target("REST commits/s across distinct repos, one worker", f">= {TARGET_COMMITS_PER_S:g}",
               f"{rate:.0f}", rate >= TARGET_COMMITS_PER_S),
        Target(f"merge dry run on a {results['merge_files']:,}-file repo, p50",
               f"< {TARGET_MERGE_P50_MS:g} ms", f"{merge:.1f} ms", merge < TARGET_MERGE_P50_MS),
    ]


def render(results: dict[str, Any]) -> str:
    rest, cli, merge = results["rest_commit"], results["git_cli_commit"], results["merge_dry_run"]
    return "\n".join([
        "`python -m bench.writes`: one worker (SQLite), one keep-alive client unless noted.",
        "",
        "| measurement | p50 | p99 | n |",
        "|---|---|---|---|",
        f"| REST commit, 10 small files | {rest['p50_ms']:.1f} ms | {rest['p99_ms']:.1f} ms | {rest['n']} |",
        f"| same commit with the git CLI (clone, commit, push) | {cli['p50_ms']:.1f} ms | "
        f"{cli['p99_ms']:.1f} ms | {cli['n']} |",
        f"| merge dry run, {results['merge_files']:,}-file repo | {merge['p50_ms']:.1f} ms | "
        f"{merge['p99_ms']:.1f} ms | {merge['n']} |",
        "",
        f"REST commits across distinct repos (4 client threads): {results['commits_per_s']:.0f}/s, "
        f"using {results['server_cpu_ms_per_commit']:.2f} ms of server CPU each (its git "
        "processes and the maintenance the commits trigger included), "
        f"that is {1000 / results['server_cpu_ms_per_commit']:.0f}/s for a worker with a core of "
        "its own.",
        f"The git CLI round trip costs {cli['p50_ms'] / rest['p50_ms']:.1f}x the REST commit.",
    ])


def main() -> None:
    bench_main("Writes without a git client", run, render, __doc__)


if __name__ == "__main__":
    main()
