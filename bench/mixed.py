"""Mixed load: many concurrent clients cloning, fetching, pushing and calling REST at once.

R repos (one baseline pushed over HTTP, the rest forked from it), C client threads for T
seconds (full: R=1,000, C=64, T=300; --quick: R=10, C=8, T=10), server with --workers 2.
Each client picks an operation at random: clone (30%), fetch (20%), push to its own branch
(20%), REST (30%: get a repo, list a page, mint a token). Reported: errors (target 0),
p50/p99 per operation, and the server's peak memory (its Python processes, and with the git
processes it spawned).

    python -m bench.mixed [--quick]
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from bench.common import UNLIMITED, Target, machine, start_server, summary, work_dir
from bench.scale import git, git_env


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def process_tree(root: int) -> list[tuple[int, str]]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True).stdout
    children: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3:
            children[int(parts[1])].append((int(parts[0]), parts[2]))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        for child in children.get(pid, []):
            found.append(child)
            stack.append(child[0])
    return found


def run(quick: bool = False) -> dict[str, Any]:
    repos_n, clients_n, seconds = (10, 8, 10) if quick else (1000, 64, 300)
    work = work_dir("mixed-")
    server = start_server(work / "data", args=("--workers", "2"), extra_env=UNLIMITED)
    api = httpx.Client(headers={"Authorization": f"Bearer {server.token}"}, timeout=120)
    try:
        env = git_env(work / "home")
        base = api.post(server.ns_url("mixed") + "/repos", json={"name": "r0"}).json()["result"]
        src = work / "src"
        git(env, "init", "-q", "-b", "main", str(src))
        for i in range(20):
            (src / f"f{i}.txt").write_text(f"file {i}\n" * 200)
        git(env, "add", "-A", cwd=src)
        git(env, "commit", "-q", "-m", "baseline", cwd=src)
        git(env, "-c", f"http.extraHeader=Authorization: Bearer {base['token']}", "push", "-q",
            base["remote"], "HEAD:main", cwd=src)
        repos = [base]
        for i in range(1, repos_n):
            fork = api.post(server.ns_url("mixed") + "/repos/r0/fork", json={"name": f"r{i}"})
            assert fork.status_code == 200, fork.text
            repos.append(fork.json()["result"])

        samples: dict[str, list[float]] = defaultdict(list)
        errors: list[str] = []
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def client(k: int) -> None:
            rng = random.Random(k)
            home = work / f"client-{k}"
            cenv = git_env(home / "home")
            mine = repos[k % len(repos)]
            hdr = f"http.extraHeader=Authorization: Bearer {mine['token']}"
            checkout = home / "checkout"
            git(cenv, "-c", hdr, "clone", "-q", mine["remote"], str(checkout))
            git(cenv, "checkout", "-q", "-b", f"client-{k}", cwd=checkout)
            http = httpx.Client(headers={"Authorization": f"Bearer {server.token}"}, timeout=120)
            n = 0
            while time.monotonic() < deadline:
                n += 1
                roll = rng.random()
                started = time.perf_counter()
                try:
                    if roll < 0.3:
                        op = "clone"
                        repo = rng.choice(repos)
                        target = home / f"c{n}"
                        git(cenv, "-c", f"http.extraHeader=Authorization: Bearer {repo['token']}",
                            "clone", "-q", "--bare", repo["remote"], str(target))
                        shutil.rmtree(target, ignore_errors=True)
                    elif roll < 0.5:
                        op = "fetch"
                        git(cenv, "-c", hdr, "fetch", "-q", "origin", cwd=checkout)
                    elif roll < 0.7:
                        op = "push"
                        (checkout / "agent.txt").write_text(f"{k} {n}\n")
                        git(cenv, "add", "agent.txt", cwd=checkout)
                        git(cenv, "commit", "-q", "-m", f"agent {k} step {n}", cwd=checkout)
                        git(cenv, "-c", hdr, "push", "-q", "origin", f"HEAD:client-{k}", cwd=checkout)
                    else:
                        op = "rest"
                        name = rng.choice(repos)["name"]
                        for response in (
                            http.get(server.ns_url("mixed") + f"/repos/{name}"),
                            http.get(server.ns_url("mixed") + "/repos", params={"limit": 20}),
                            http.post(server.ns_url("mixed") + "/tokens",
                                      json={"repo": name, "scope": "read", "ttl": 600}),
                        ):
                            if response.status_code != 200:
                                raise RuntimeError(f"REST {response.status_code}: {response.text[:200]}")
                except Exception as exc:
                    with lock:
                        errors.append(f"{op}: {str(exc)[:300]}")
                    continue
                with lock:
                    samples[op].append(time.perf_counter() - started)
            http.close()

        peak = {"server_kb": 0, "with_git_kb": 0}
        sampling = threading.Event()

        def sampler() -> None:
            assert server.process is not None
            while not sampling.is_set():
                tree = process_tree(server.process.pid)
                python_kb = rss_kb(server.process.pid) + sum(
                    rss_kb(pid) for pid, comm in tree if "git" not in comm)
                total_kb = python_kb + sum(rss_kb(pid) for pid, comm in tree if "git" in comm)
                peak["server_kb"] = max(peak["server_kb"], python_kb)
                peak["with_git_kb"] = max(peak["with_git_kb"], total_kb)
                time.sleep(0.5)

        watcher = threading.Thread(target=sampler, daemon=True)
        watcher.start()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sampling.set()
        return {
            "machine": machine(), "repos": repos_n, "clients": clients_n, "seconds": seconds,
            "errors": len(errors), "error_samples": errors[:5],
            "ops": {op: summary(v) for op, v in sorted(samples.items())},
            "peak_server_mb": round(peak["server_kb"] / 1024, 1),
            "peak_with_git_mb": round(peak["with_git_kb"] / 1024, 1),
        }
    finally:
        api.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def targets(results: dict[str, Any]) -> list[Target]:
    ops = ", ".join(f"{op} {s['p50_ms']:.0f}/{s['p99_ms']:.0f}" for op, s in results["ops"].items())
    return [
        Target(f"mixed load errors ({results['clients']} clients, {results['seconds']} s, "
               f"{results['repos']} repos)", "0", str(results["errors"]), results["errors"] == 0),
        Target("mixed load p50/p99 per operation (ms)", "reported", ops, None),
        Target("mixed load peak server RSS", "bounded, reported",
               f"{results['peak_server_mb']} MB ({results['peak_with_git_mb']} MB with git)", None),
    ]


def render(results: dict[str, Any]) -> str:
    lines = [
        f"Command: `python -m bench.mixed`. {results['clients']} concurrent clients for "
        f"{results['seconds']} s against {results['repos']} repos (forks of one baseline), "
        f"`--workers 2`, SQLite. Machine: {results['machine']}.",
        "",
        f"Errors: **{results['errors']}** (target 0). Peak server memory: "
        f"**{results['peak_server_mb']} MB** (Python processes), {results['peak_with_git_mb']} MB "
        "with the git processes they spawned.",
        "",
        "| operation | count | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|",
    ]
    for op, s in results["ops"].items():
        lines.append(f"| {op} | {s['n']} | {s['p50_ms']:.0f} | {s['p99_ms']:.0f} |")
    if results["error_samples"]:
        lines += ["", "First errors: " + "; ".join(f"`{e}`" for e in results["error_samples"])]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    out = run("--quick" in sys.argv)
    print(render(out))
