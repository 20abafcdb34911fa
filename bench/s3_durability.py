"""Durability of the ``s3`` backend at the issue's sizes (issue 16): racing pushes and kill -9.

Two nodes with separate caches on one PostgreSQL (the suite's ``initdb``/``pg_ctl``
cluster) and one SeaweedFS (``weed mini``) bucket, as ``bench/s3.py`` runs them.

- **Racing pushes**: 1,000 push attempts from 16 clients, half through each node, to the
  same two branches. Each attempt fetches, commits on the branch's tip and pushes; git
  refuses the ones that lost the race (stale old value). Every commit has one parent, so
  a branch's final history is exactly the chain of the updates that were acknowledged:
  each acknowledged commit must be in its branch's first-parent history (none lost), no
  refused commit may be there (no update applied that the client was told failed), and
  nothing else may be (no update nobody made). Both nodes must list the same refs.
- **kill -9**: 100 times, a push of a commit with 1 MB of fresh random data through node A,
  and a ``kill -9`` of A at a random moment inside the push's usual duration (measured
  first, unkilled, so that kills land before, during and after the SQL commit), then A
  started again. Through node B afterwards: an acknowledged push must be the branch's tip
  (none lost), the tip must be the old value or the new one (nothing half-done), a fresh
  clone must be ``git fsck``-clean (no ref to a missing object), and A once restarted must
  list what B lists.

    python -m bench --only s3_durability [--quick]
    python -m bench.s3_durability [--quick] [--no-write]
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.gitutil import Git, Repo, bearer, create_repo
from tests.harness import Postgres
from tests.multinode import Cluster, restart, start_cluster
from tests.seaweed import SeaweedFS

from bench.common import UNLIMITED, Target, bench_main, machine, work_dir

TITLE = "S3 durability: racing pushes and kill -9 at full size"
NODE_ENV = {**UNLIMITED, "ARTIFACTD_MAX_REPO_BYTES": "100GB", "ARTIFACTD_MAINTENANCE_INTERVAL": "0"}
BRANCHES = ("main", "side")
KILL_BLOB = 1 << 20


def sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"race_clients": 4, "race_pushes": 24, "kills": 3}
    return {"race_clients": 16, "race_pushes": 1000, "kills": 100}


@dataclass
class Attempt:
    branch: str
    parent: str
    sha: str
    acked: bool


def _through(cluster: Cluster, repo: Repo, node: int) -> str:
    return cluster.remote(repo, node)


def _refs(git: Git, token: str, remote: str) -> dict[str, str]:
    out = git.out("-c", bearer(token), "ls-remote", remote, "refs/heads/*")
    return {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}


def race(git: Git, base: Path, cluster: Cluster, clients: int, total: int) -> dict[str, Any]:
    repo = create_repo(cluster.nodes[0], "race")
    seed = base / "race-seed"
    git.new_work(seed)
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote,
            *(f"HEAD:refs/heads/{b}" for b in BRANCHES), cwd=seed)
    seed_sha = git.out("rev-parse", "HEAD", cwd=seed)
    attempts: list[Attempt] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(index: int, count: int) -> None:
        remote = _through(cluster, repo, index % 2)
        work = base / f"race-{index}"
        try:
            git.run("-c", bearer(repo.token), "clone", "-q", remote, str(work))
            for n in range(count):
                branch = BRANCHES[(index + n) % len(BRANCHES)]
                git.run("-c", bearer(repo.token), "fetch", "-q", "origin", cwd=work)
                git.run("checkout", "-q", "--detach", f"origin/{branch}", cwd=work)
                parent = git.out("rev-parse", "HEAD", cwd=work)
                sha = git.commit_files(work, {f"c{index}.txt": f"{n}\n"}, f"{index}/{n}")
                pushed = git.run("-c", bearer(repo.token), "push", "-q", "origin",
                                 f"HEAD:refs/heads/{branch}", cwd=work, check=False)
                with lock:
                    attempts.append(Attempt(branch, parent, sha, pushed.returncode == 0))
        except Exception as exc:  # a client that cannot go on is reported, not hidden
            with lock:
                errors.append(f"client {index}: {exc}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i, total // clients + (i < total % clients)))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started

    final = base / "race-final"
    git.run("-c", bearer(repo.token), "clone", "-q", "--bare", _through(cluster, repo, 1), str(final))
    fsck_clean = git.run("fsck", "--strict", "--no-progress", cwd=final, check=False).returncode == 0
    nodes_agree = _refs(git, repo.token, _through(cluster, repo, 0)) == \
        _refs(git, repo.token, _through(cluster, repo, 1))
    lost = refused_applied = unexplained = 0
    for branch in BRANCHES:
        chain = git.out("rev-list", "--first-parent", branch, cwd=final).split()
        on_branch = set(chain)
        mine = [a for a in attempts if a.branch == branch]
        acked = {a.sha for a in mine if a.acked}
        lost += len(acked - on_branch)
        refused_applied += sum(1 for a in mine if not a.acked and a.sha in on_branch)
        unexplained += len(on_branch - acked - {seed_sha})
    acked_total = sum(a.acked for a in attempts)
    return {"clients": clients, "attempts": len(attempts), "acked": acked_total,
            "refused": len(attempts) - acked_total, "lost": lost, "refused_applied": refused_applied,
            "unexplained": unexplained, "fsck_clean": fsck_clean,
            "nodes_agree": nodes_agree, "client_errors": errors, "seconds": round(seconds, 1)}


def _push_kill(git: Git, work: Path, remote: str, token: str, node: Any, delay: float | None) -> bool:
    """Push HEAD to main through ``node``; kill -9 the node after ``delay`` seconds (None: no
    kill). Returns whether git acknowledged the push."""
    pusher = subprocess.Popen(["git", "-c", bearer(token), "push", "-q", remote, "HEAD:refs/heads/main"],
                              cwd=work, env=git.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    if delay is not None:
        try:
            pusher.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
        assert node.process is not None
        node.process.kill()
        node.process.wait()
    return pusher.wait(timeout=300) == 0


def kills(git: Git, base: Path, cluster: Cluster, count: int, seed: int = 16) -> dict[str, Any]:
    a, b = cluster.nodes
    repo = create_repo(b, "kills")
    through_a, through_b = _through(cluster, repo, 0), _through(cluster, repo, 1)
    work = base / "kills-work"
    git.new_work(work)
    git.run("-c", bearer(repo.token), "push", "-q", through_b, "main", cwd=work)
    rng = random.Random(seed)

    # The usual duration of one such push through A, unkilled: kills are spread over it.
    durations = []
    for i in range(3):
        git.commit_files(work, {"k.bin": os.urandom(KILL_BLOB)}, f"calibrate {i}")
        started = time.perf_counter()
        assert _push_kill(git, work, through_a, repo.token, a, None)
        durations.append(time.perf_counter() - started)
    window = 1.5 * statistics.median(durations)

    outcomes = {"acked": 0, "visible_unacked": 0, "not_visible": 0}
    lost = half_done = fsck_failures = disagree = 0
    restart_s: list[float] = []
    for i in range(count):
        before = git.out("rev-parse", "HEAD", cwd=work)
        sha = git.commit_files(work, {"k.bin": os.urandom(KILL_BLOB)}, f"k{i}")
        acked = _push_kill(git, work, through_a, repo.token, a, rng.uniform(0.0, window))
        listed = _refs(git, repo.token, through_b).get("refs/heads/main", "")
        if acked:
            outcomes["acked"] += 1
            lost += listed != sha
        elif listed == sha:
            outcomes["visible_unacked"] += 1  # committed in SQL, killed before git's answer
        else:
            outcomes["not_visible"] += 1
        half_done += listed not in (before, sha)
        clone = base / f"kills-clone-{i}"
        cloned = git.run("-c", bearer(repo.token), "clone", "-q", "--bare", through_b, str(clone),
                         check=False, timeout=600).returncode == 0
        if not cloned or git.run("fsck", "--no-progress", cwd=clone, check=False).returncode != 0:
            fsck_failures += 1
        shutil.rmtree(clone, ignore_errors=True)
        started = time.perf_counter()
        restart(a)
        restart_s.append(time.perf_counter() - started)
        disagree += _refs(git, repo.token, through_a) != _refs(git, repo.token, through_b)
        git.run("reset", "-q", "--hard", listed or before, cwd=work)
    return {"kills": count, "window_s": round(window, 3), **outcomes, "lost": lost,
            "half_done": half_done, "fsck_failures": fsck_failures, "nodes_disagree": disagree,
            "restart_p50_s": round(statistics.median(restart_s), 2) if restart_s else 0.0}


def run(quick: bool = False) -> dict[str, Any]:
    wanted = sizes(quick)
    base = work_dir("s3dur-")
    pg, store = Postgres(), SeaweedFS()
    pg.start()
    store.start()
    cluster: Cluster | None = None
    try:
        cluster = start_cluster(base / "cluster", pg, store, **NODE_ENV)
        git = Git(base / "home")
        results: dict[str, Any] = {"machine": machine(), "sizes": wanted}
        results["race"] = race(git, base, cluster, wanted["race_clients"], wanted["race_pushes"])
        results["kill"] = kills(git, base, cluster, wanted["kills"])
        results["load_average"] = round(os.getloadavg()[0], 1)
        return results
    finally:
        if cluster is not None:
            cluster.stop()
        store.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def _race_clean(race: dict[str, Any]) -> bool:
    return (race["lost"] == 0 and race["refused_applied"] == 0 and race["unexplained"] == 0
            and race["fsck_clean"] and race["nodes_agree"]
            and not race["client_errors"])


def _kill_clean(kill: dict[str, Any]) -> bool:
    return (kill["lost"] == 0 and kill["half_done"] == 0 and kill["fsck_failures"] == 0
            and kill["nodes_disagree"] == 0)


def targets(results: dict[str, Any]) -> list[Target]:
    race, kill = results["race"], results["kill"]
    return [
        Target(f"s3 racing pushes ({race['attempts']}, {race['clients']} clients, 2 nodes, 2 branches)",
               "0 lost acknowledged updates",
               f"{race['lost']} lost of {race['acked']} acknowledged, {race['refused_applied']} "
               f"refused yet applied, {race['unexplained']} unexplained", _race_clean(race)),
        Target(f"s3 kill -9 of a node mid-push ({kill['kills']} times)",
               "0 lost acknowledged, 0 refs to missing objects",
               f"{kill['lost']} lost of {kill['acked']} acknowledged, {kill['fsck_failures']} "
               "fresh clones failing fsck", _kill_clean(kill)),
    ]


def render(results: dict[str, Any]) -> str:
    race, kill = results["race"], results["kill"]
    yes = {True: "yes", False: "**no**"}
    return "\n".join([
        f"Machine: {results['machine']}; shared with seven other engineers' tests and benchmarks",
        f"(load average {results['load_average']} on 2 cores at the end of the run), so the",
        "times are the machine's; the counts are the point. Two `s3` nodes with separate caches",
        "on one PostgreSQL and one SeaweedFS bucket.",
        f"Run: `python -m bench --only s3_durability` with sizes {results['sizes']}.", "",
        f"**Racing pushes**: {race['attempts']} attempts from {race['clients']} clients (half through",
        f"each node) to the same two branches, in {race['seconds']} s: {race['acked']} acknowledged,",
        f"{race['refused']} refused as stale. Checked against each branch's final first-parent",
        "history (every commit has one parent, so it is exactly the chain of acknowledged updates):",
        "", "| check | result |", "|---|---|",
        f"| acknowledged updates missing from their branch's history | **{race['lost']}** |",
        f"| refused pushes whose commit is in the history anyway | {race['refused_applied']} |",
        f"| commits in the history nobody had acknowledged | {race['unexplained']} |",
        f"| fresh clone `git fsck --strict` clean | {yes[race['fsck_clean']]} |",
        f"| both nodes list the same refs | {yes[race['nodes_agree']]} |",
        f"| clients that could not go on | {len(race['client_errors'])} |", "",
        f"**kill -9 mid-push**, {kill['kills']} times: a push of 1 MB of fresh random data through",
        f"node A, A killed at a random moment in the first {kill['window_s']} s (1.5x an unkilled",
        "push's median there) and started again (p50 "
        f"{kill['restart_p50_s']} s); checked through node B each time.", "",
        "| outcome | count |", "|---|---|",
        f"| push acknowledged (kill after git's answer, or the push beat it) | {kill['acked']} |",
        f"| not acknowledged, yet visible (killed between the SQL commit and the answer) | "
        f"{kill['visible_unacked']} |",
        f"| not acknowledged, not visible (killed before the commit) | {kill['not_visible']} |",
        f"| **acknowledged pushes lost** | **{kill['lost']}** |",
        f"| branch neither the old value nor the new one | {kill['half_done']} |",
        f"| fresh clones through B failing `git fsck` (refs to missing objects) | "
        f"**{kill['fsck_failures']}** |",
        f"| A, restarted, listing other refs than B | {kill['nodes_disagree']} |",
    ])


def main() -> None:
    bench_main(TITLE, run, render, __doc__)


if __name__ == "__main__":
    main()
