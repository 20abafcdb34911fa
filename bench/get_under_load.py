"""GET p99 while pushes and forks run against a 1,000,000-repo account (issue 12).

One account with 1,000,000 repos in one namespace (10,000 with ``--quick``), seeded straight
into SQLite by ``bench.at_scale.seed`` (the rows ``create`` writes), served by
``artifactd serve --workers 2``. A reader sends sequential ``GET /repos/:name`` for random
seeded repos over one keep-alive connection, in rounds that alternate two phases of equal
length: idle (nothing else runs) and loaded (one client pushes one small commit into a repo
made for it, in a loop, and another forks a pushed repo of the same account, in a loop).
Alternating the phases round by round means a change in the shared machine's load hits both
alike. The target: the GET p99 while loaded under 2x its p99 idle.

Two shapes of load, one after the other against the same server:

- **saturating**: each loop starts its next push (fork) as soon as the last one answered, so
  that with the clients on the server's own two cores the machine is busy all the time;
- **paced**: the same loops held to half the rates the saturating load reached, the shape of
  "pushes and forks running" on a node whose clients are elsewhere.

Each phase's first ``SETTLE_GETS`` GETs are not counted, in both phases alike: they measure
the switch (the other phase's last push finishing, maintenance it set off, a vCPU woken from
halt after the pause between phases), not the phase. On this machine the first 50-100 GETs
of an idle phase answered in 10-60 ms with the server's own time under 1 ms.

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

from bench.at_scale import patient_server, seeded_account
from bench.common import Target, bench_main, machine, summary, work_dir
from bench.scale import git, git_env, one_commit_work_tree

FULL = 1_000_000
QUICK = 10_000
SETTLE_GETS = 50  # GETs of each phase left uncounted (see the module docstring)
PACED_SHARE = 0.5  # the paced load: this share of the saturating load's rates
TARGET_RATIO = 2.0


class Load:
    """Pushes and forks, in a process of their own, until stopped; counts what they did.

    A process, not threads beside the reader: a thread of the reader's process holding the
    GIL (parsing a response, starting a ``git push``) would add up to the interpreter's
    switch interval (5 ms) to a GET, and the p99 would measure the benchmark, not the server.
    ``pace`` sets the rates (pushes/s, forks/s); 0 runs a loop back to back.
    """

    def __init__(self, ns_url: str, token: str, env: dict[str, str], seed_work: Path,
                 parent: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.running = context.Event()
        self.stopped = context.Event()
        self.pushes = context.Value("i", 0)
        self.forks = context.Value("i", 0)
        self.push_rate = context.Value("d", 0.0)
        self.fork_rate = context.Value("d", 0.0)
        self.error_queue: Any = context.Queue()
        self.errors: list[str] = []
        self.process = context.Process(
            target=_load_main, daemon=True,
            args=(ns_url, token, env, seed_work, parent, self.running, self.stopped,
                  self.pushes, self.forks, self.push_rate, self.fork_rate, self.error_queue))
        self.process.start()

    @property
    def counts(self) -> dict[str, int]:
        return {"push": self.pushes.value, "fork": self.forks.value}

    def pace(self, pushes_per_s: float, forks_per_s: float) -> None:
        self.push_rate.value, self.fork_rate.value = pushes_per_s, forks_per_s

    def stop(self) -> None:
        self.stopped.set()
        self.process.join(timeout=120)
        if self.process.is_alive():
            self.process.kill()
        while not self.error_queue.empty():
            self.errors.append(self.error_queue.get())


def _load_main(ns_url: str, token: str, env: dict[str, str], seed_work: Path, parent: str,
               running: Any, stopped: Any, pushes: Any, forks: Any, push_rate: Any,
               fork_rate: Any, errors: Any) -> None:
    """The load process: a push loop and a fork loop, each in a thread of its own."""

    def loop(op: str) -> None:
        counter, rate = (pushes, push_rate) if op == "push" else (forks, fork_rate)
        next_at = 0.0
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
            while not stopped.is_set():
                if not running.wait(0.05):
                    next_at = 0.0
                    continue
                if rate.value > 0:  # paced: start on schedule, never catch up in a burst
                    now = time.monotonic()
                    next_at = max(next_at + 1 / rate.value, now) if next_at else now
                    time.sleep(max(0.0, next_at - now))
                try:
                    if op == "push":
                        made = c.post(f"{ns_url}/repos",
                                      json={"name": f"push-{uuid.uuid4().hex[:12]}"})
                        assert made.status_code == 200, made.text
                        repo = made.json()["result"]
                        git(env, "-c", f"http.extraHeader=Authorization: Bearer {repo['token']}",
                            "push", "-q", repo["remote"], "main", cwd=seed_work)
                    else:
                        forked = c.post(f"{ns_url}/repos/{parent}/fork",
                                        json={"name": f"fork-{uuid.uuid4().hex[:12]}"})
                        assert forked.status_code == 200, forked.text
                    with counter.get_lock():
                        counter.value += 1
                except Exception as exc:  # counted and reported, never fatal
                    errors.put(f"{op}: {str(exc)[:200]}")

    threads = [threading.Thread(target=loop, args=(op,)) for op in ("push", "fork")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _rounds(client: httpx.Client, ns_url: str, size: int, load: Load, rounds: int,
            per_round: int) -> dict[str, Any]:
    """Alternating idle and loaded phases; each phase's GET latencies past its settling."""
    samples: dict[str, list[float]] = {"idle": [], "loaded": []}
    loaded_seconds = 0.0
    before = load.counts
    for i in range(rounds):
        for phase in (("idle", "loaded") if i % 2 == 0 else ("loaded", "idle")):
            if phase == "loaded":
                load.running.set()
                time.sleep(0.5)  # the first push and fork are under way
            began = time.monotonic()
            for n in range(SETTLE_GETS + per_round):
                url = f"{ns_url}/repos/seed-{secrets.randbelow(size):08d}"
                started = time.perf_counter()
                response = client.get(url)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.text
                if n >= SETTLE_GETS:
                    samples[phase].append(elapsed)
            load.running.clear()
            if phase == "loaded":
                loaded_seconds += time.monotonic() - began + 0.5
                time.sleep(0.5)  # let the last push or fork finish before idle
    after = load.counts
    pushes, forks = after["push"] - before["push"], after["fork"] - before["fork"]
    return {"idle": summary(samples["idle"]), "loaded": summary(samples["loaded"]),
            "pushes": pushes, "forks": forks,
            "pushes_per_s": round(pushes / loaded_seconds, 1),
            "forks_per_s": round(forks / loaded_seconds, 1)}


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
        started = time.monotonic()
        account_id, token = seeded_account(data_dir, "agents", size)
        seed_seconds = time.monotonic() - started
        server = patient_server(data_dir, ("--workers", "2"))
        ns_url = f"{server.url}/client/v4/accounts/{account_id}/artifacts/namespaces/agents"
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            parent = client.post(f"{ns_url}/repos", json={"name": "parent"}).json()["result"]
            git(env, "-c", f"http.extraHeader=Authorization: Bearer {parent['token']}", "push", "-q",
                parent["remote"], "main", cwd=seed_work)
            load = Load(ns_url, token, env, seed_work, "parent")
            for _ in range(20):  # warm-up
                client.get(f"{ns_url}/repos/seed-{secrets.randbelow(size):08d}")
            saturating = _rounds(client, ns_url, size, load, rounds, per_round)
            load.pace(max(0.5, saturating["pushes_per_s"] * PACED_SHARE),
                      max(0.5, saturating["forks_per_s"] * PACED_SHARE))
            paced = _rounds(client, ns_url, size, load, rounds, per_round)
            load.stop()
        return {"machine": machine(), "size": size, "seed_seconds": round(seed_seconds, 1),
                "settle_gets": SETTLE_GETS, "saturating": saturating, "paced": paced,
                "errors": load.errors[:5], "error_count": len(load.errors)}
    finally:
        if load is not None:
            load.stop()
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _ratio(part: dict[str, Any]) -> float:
    return float(part["loaded"]["p99_ms"]) / max(float(part["idle"]["p99_ms"]), 1e-6)


def targets(results: dict[str, Any]) -> list[Target]:
    found = []
    for shape in ("saturating", "paced"):
        part = results[shape]
        ratio = _ratio(part)
        found.append(Target(
            f"GET p99 while pushes and forks run, {shape} load ({results['size']:,} repos) vs idle",
            f"< {TARGET_RATIO:g}x", f"{ratio:.2f}x ({part['loaded']['p99_ms']:.2f} vs "
            f"{part['idle']['p99_ms']:.2f} ms)", ratio < TARGET_RATIO and not results["error_count"]))
    return found


def render(results: dict[str, Any]) -> str:
    lines = [
        f"Command: `python -m bench.get_under_load`. Machine: {results['machine']}. Server: "
        "`artifactd serve --workers 2`, SQLite, same machine as the clients.",
        "",
        f"One account with {results['size']:,} repos in one namespace (seeded into the database "
        f"in {results['seed_seconds']} s by `bench.at_scale.seed`). Sequential "
        "`GET /repos/:name` of random repos over one keep-alive connection, in rounds that "
        "alternate idle (nothing else runs) and loaded (one client pushing one small commit "
        "into a new repo in a loop, another forking a pushed repo in a loop, both in the same "
        "account, from a process of their own). Saturating: each loop back to back; paced: "
        f"the same at {PACED_SHARE:.0%} of the saturating rates. The first "
        f"{results['settle_gets']} GETs of every phase are not counted (the switch, not the "
        "phase).",
        "",
        "| load | phase | GETs | p50 (ms) | p99 (ms) | pushes/s | forks/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in ("saturating", "paced"):
        part = results[shape]
        idle, loaded = part["idle"], part["loaded"]
        lines += [
            f"| {shape} | idle (reference) | {idle['n']} | {idle['p50_ms']:.2f} | "
            f"{idle['p99_ms']:.2f} | | |",
            f"| {shape} | pushes and forks running | {loaded['n']} | {loaded['p50_ms']:.2f} | "
            f"{loaded['p99_ms']:.2f} | {part['pushes_per_s']} | {part['forks_per_s']} |",
        ]
    lines += [
        "",
        f"GET p99 loaded vs idle: saturating **{_ratio(results['saturating']):.2f}x**, paced "
        f"**{_ratio(results['paced']):.2f}x** (target under {TARGET_RATIO:g}x); "
        f"{results['error_count']} errors.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main("GET p99 under pushes and forks", run, render, __doc__)
