"""First read of a fresh repo (issue 12): push a repo, then read a file of it for the first time.

For each of N repos (100; 10 with ``--quick``): create it through the API, push one small
commit with the git CLI, then ``GET raw/main/<file>`` straight away (the repo's first read:
no read has opened it, so the worker opens the repository in process), then the same read
again (warm). Reference, in the same run and on the same repo: ``git cat-file blob
main:<file>`` as a process, the cost a server that starts one per read pays every time.
One server worker, SQLite, sequential calls over one keep-alive connection. Target: the
first read's p50 under 3 ms.

    python -m bench.first_read [--quick] [--no-write]
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

from bench.common import UNLIMITED, Target, bench_main, machine, start_server, summary, work_dir
from bench.dense import repo_dir
from bench.scale import git, git_env, one_commit_work_tree


def run(quick: bool = False) -> dict[str, Any]:
    count = 10 if quick else 100
    work = work_dir("first-read-")
    server = start_server(work / "data", extra_env=UNLIMITED)
    env = git_env(work / "home")
    samples: dict[str, list[float]] = {"first": [], "warm": [], "process": []}
    try:
        seed_work = one_commit_work_tree(work / "seed", env)
        with server.client() as client:
            for i in range(count + 1):  # the first repo warms the worker up, not counted
                repo = client.post("/repos", json={"name": f"fresh{i}"}).json()["result"]
                git(env, "-c", f"http.extraHeader=Authorization: Bearer {repo['token']}", "push",
                    "-q", repo["remote"], "main", cwd=seed_work)
                url = f"/repos/{repo['name']}/raw/main/notes.txt"
                for phase in ("first", "warm"):
                    started = time.perf_counter()
                    response = client.get(url)
                    elapsed = time.perf_counter() - started
                    assert response.status_code == 200 and response.content == b"one small commit\n"
                    if i:
                        samples[phase].append(elapsed)
                started = time.perf_counter()
                subprocess.run(["git", f"--git-dir={repo_dir(server, repo['id'])}", "cat-file",
                                "blob", "main:notes.txt"], capture_output=True, check=True)
                if i:
                    samples["process"].append(time.perf_counter() - started)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"machine": machine(), "repos": count,
            **{phase: summary(values) for phase, values in samples.items()}}


def targets(results: dict[str, Any]) -> list[Target]:
    first = results["first"]["p50_ms"]
    return [Target("first read of a fresh repo p50", "< 3 ms",
                   f"{first:.2f} ms (warm {results['warm']['p50_ms']:.2f} ms, a cat-file process "
                   f"{results['process']['p50_ms']:.2f} ms)", first < 3)]


def render(results: dict[str, Any]) -> str:
    rows = [("first read, right after the push", "first"), ("the same read again (warm)", "warm"),
            ("`git cat-file blob` process, same repo (reference)", "process")]
    return "\n".join([
        f"Command: `python -m bench.first_read`. Machine: {results['machine']}. Server: "
        "`artifactd serve` (one worker), SQLite, same machine as the client.",
        "",
        f"{results['repos']} repos, each created through the API, pushed one small commit with "
        "the git CLI and then read at once (`GET raw/main/notes.txt`: the repo's first read, "
        "which opens it in process), then read again; the reference starts `git cat-file` on "
        "the same repo.",
        "",
        "| read | p50 (ms) | p99 (ms) |",
        "|---|---|---|",
        *[f"| {label} | {results[key]['p50_ms']:.2f} | {results[key]['p99_ms']:.2f} |"
          for label, key in rows],
        "",
        f"First read vs warm: {results['first']['p50_ms'] / max(results['warm']['p50_ms'], 1e-6):.2f}x; "
        f"vs a cat-file process: "
        f"{results['first']['p50_ms'] / max(results['process']['p50_ms'], 1e-6):.2f}x. "
        "Target: first read p50 under 3 ms.",
    ])


if __name__ == "__main__":
    bench_main("First read of a fresh repo", run, render, __doc__)
