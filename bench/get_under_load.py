"""GET p99 while pushes and forks run against a 1,000,000-repo account (issue 12).

One account with 1,000,000 repos in one namespace (10,000 with ``--quick``), seeded straight
into SQLite by ``bench.at_scale.seed`` (the rows ``create`` writes), served by
``artifactd serve --workers 2``. A reader sends sequential ``GET /repos/:name`` for random
seeded repos over one keep-alive connection, in rounds that alternate two phases of equal
length: idle (nothing else runs) and loaded (one client pushes one small commit into a repo
made for it, in a loop, and another forks a pushed repo of the same account, in a loop).
Alternating the phases round by round means a change in the shared machine's load hits both
alike. The target: the GET p99 while loaded under 2x its p99 idle.

    python -m bench.get_under_load [--quick] [--no-write]
"""

from __future__ import annotations

import multiprocessing
import secrets
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from artifactd.config import Settings
from artifactd.services.access import accounts
from artifactd.services.backend import Backend
from bench.at_scale import patient_server, seed
from bench.common import Target, bench_main, machine, summary, work_dir
from bench.scale import git, git_env, one_commit_work_tree

FULL = 1_000_000
QUICK = 10_000


class Load:
    """Pushes and forks, in a process of their own, until stopped; counts what they did.

    A process, not threads beside the reader: a thread of the reader's process holding the
    GIL (parsing a response, starting a ``git push``) would add up to the interpreter's
    switch interval (5 ms) to a GET, and the p99 would measure the benchmark, not the server.
    """

    def __init__(self, ns_url: str, token: str, env: dict[str, str], seed_work: Path,
                 parent: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.running = context.Event()
        self.stopped = context.Event()
        self.pushes = context.Value("i", 0)
        self.forks = context.Value("i", 0)
        self.error_queue: Any = context.Queue()
        self.errors: list[str] = []
        self.process = context.Process(
            target=_load_main, daemon=True,
            args=(ns_url, token, env, seed_work, parent, self.running, self.stopped,
                  self.pushes, self.forks, self.error_queue))
        self.process.start()

    @property
    def counts(self) -> dict[str, int]:
        return {"push": self.pushes.value, "fork": self.forks.value}

    def stop(self) -> None:
        self.stopped.set()
        self.process.join(timeout=120)
        if self.process.is_alive():
            self.process.kill()
        while not self.error_queue.empty():
            self.errors.append(self.error_queue.get())


def _load_main(ns_url: str, token: str, env: dict[str, str], seed_work: Path, parent: str,
               running: Any, stopped: Any, pushes: Any, forks: Any, errors: Any) -> None:
    """The load process: a push loop and a fork loop, each in a thread of its own."""

    def loop(op: str) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
            while not stopped.is_set():
                if not running.wait(0.05):
                    continue
                try:
                    if op == "push":
                        made = c.post(f"{ns_url}/repos",
                                      json={"name": f"push-{uuid.uuid4().hex[:12]}"})
                        assert made.status_code == 200, made.text
                        repo = made.json()["result"]
                        git(env, "-c", f"http.extraHeader=Authorization: Bearer {repo['token']}",
                            "push", "-q", repo["remote"], "main", cwd=seed_work)
                        counter = pushes
                    else:
                        forked = c.post(f"{ns_url}/repos/{parent}/fork",
                                        json={"name": f"fork-{uuid.uuid4().hex[:12]}"})
                        assert forked.status_code == 200, forked.text
                        counter = forks
                    with counter.get_lock():
                        counter.value += 1
                except Exception as exc:  # counted and reported, never fatal
                    errors.put(f"{op}: {str(exc)[:200]}")

    threads = [threading.Thread(target=loop, args=(op,)) for op in ("push", "fork")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run(quick: bool = False, size: int | None = None) -> dict[str, Any]:
    size = size or (QUICK if quick else FULL)
    rounds, per_round = (2, 50) if quick else (10, 300)
    work = work_dir("get-under-load-")
    data_dir = work / "data"
    env = git_env(work / "home")
    seed_work = one_commit_work_tree(work / "seed", env)
    server = None
    load = None
    try:
        backend = Backend.open(Settings(data_dir=str(data_dir)))
        row, token = accounts.create_api_token(backend, secrets.token_hex(16), "edit")
        backend.close()
        started = time.monotonic()
        seed(data_dir, row.account_id, "agents", size)
        seed_seconds = time.monotonic() - started
        server = patient_server(data_dir, ("--workers", "2"))
        ns_url = f"{server.url}/client/v4/accounts/{row.account_id}/artifacts/namespaces/agents"
        samples: dict[str, list[float]] = {"idle": [], "loaded": []}
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            parent = client.post(f"{ns_url}/repos", json={"name": "parent"}).json()["result"]
            git(env, "-c", f"http.extraHeader=Authorization: Bearer {parent['token']}", "push", "-q",
                parent["remote"], "main", cwd=seed_work)
            load = Load(ns_url, token, env, seed_work, "parent")

            def get_all(phase: str, count: int, keep: bool = True) -> None:
                for _ in range(count):
                    url = f"{ns_url}/repos/seed-{secrets.randbelow(size):08d}"
                    began = time.perf_counter()
                    response = client.get(url)
                    elapsed = time.perf_counter() - began
                    assert response.status_code == 200, response.text
                    if keep:
                        samples[phase].append(elapsed)

            get_all("idle", 20, keep=False)  # warm-up
            for i in range(rounds):
                for phase in (("idle", "loaded") if i % 2 == 0 else ("loaded", "idle")):
                    if phase == "loaded":
                        load.running.set()
                        time.sleep(0.5)  # the first push and fork are under way
                    get_all(phase, per_round)
                    load.running.clear()
                    if phase == "loaded":
                        time.sleep(0.5)  # let the last push or fork finish before idle
            load.stop()
        counts = load.counts
        return {"machine": machine(), "size": size, "seed_seconds": round(seed_seconds, 1),
                "idle": summary(samples["idle"]), "loaded": summary(samples["loaded"]),
                "pushes": counts["push"], "forks": counts["fork"],
                "errors": load.errors[:5], "error_count": len(load.errors)}
    finally:
        if load is not None:
            load.stop()
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def targets(results: dict[str, Any]) -> list[Target]:
    idle, loaded = results["idle"]["p99_ms"], results["loaded"]["p99_ms"]
    ratio = loaded / max(idle, 1e-6)
    return [Target(f"GET p99 while pushes and forks run ({results['size']:,} repos) vs idle",
                   "< 2x", f"{ratio:.2f}x ({loaded:.2f} vs {idle:.2f} ms)", ratio < 2)]


def render(results: dict[str, Any]) -> str:
    idle, loaded = results["idle"], results["loaded"]
    ratio = loaded["p99_ms"] / max(idle["p99_ms"], 1e-6)
    return "\n".join([
        f"Command: `python -m bench.get_under_load`. Machine: {results['machine']}. Server: "
        "`artifactd serve --workers 2`, SQLite, same machine as the clients.",
        "",
        f"One account with {results['size']:,} repos in one namespace (seeded into the database "
        f"in {results['seed_seconds']} s by `bench.at_scale.seed`). Sequential "
        "`GET /repos/:name` of random repos over one keep-alive connection, in rounds that "
        "alternate idle (nothing else runs) and loaded (one client pushing one small commit "
        "into a new repo in a loop, another forking a pushed repo in a loop, both in the same "
        "account).",
        "",
        "| phase | GETs | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|",
        f"| idle (reference) | {idle['n']} | {idle['p50_ms']:.2f} | {idle['p99_ms']:.2f} |",
        f"| pushes and forks running | {loaded['n']} | {loaded['p50_ms']:.2f} | "
        f"{loaded['p99_ms']:.2f} |",
        "",
        f"While loaded: {results['pushes']} pushes and {results['forks']} forks, "
        f"{results['error_count']} errors. GET p99 loaded vs idle: **{ratio:.2f}x** "
        "(target under 2x).",
    ])


if __name__ == "__main__":
    bench_main("GET p99 under pushes and forks", run, render, __doc__)
