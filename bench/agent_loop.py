"""The agent loop: create a repo, push one small commit, clone it, read a file, delete it.

16 agents run the loop concurrently for a fixed time against artifactd and, in the same
run, against the plain reference: ``git init --bare`` (+ ``http.receivepack``) for the
create, C ``git http-backend`` behind nginx + fcgiwrap for the push and the clone, a CGI
``git cat-file`` for the read (see ``bench.dense``) and ``rm -rf`` for the delete. Loops/s
of each and the ratio. Target (issue 12): at least 1.5x the reference.

    python -m bench.agent_loop [--quick]
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.common import UNLIMITED, Target, machine, start_server, work_dir
from bench.dense import serve_cgi
from bench.git_plane import serve_http_backend
from bench.scale import git, git_env

AGENTS = 16
TARGET_RATIO = 1.5
# The sides take turns (artifactd, reference, artifactd, ...) in this many rounds each, so that
# a change in the machine's load (other work on a shared machine) falls on both alike.
ROUNDS = 12
# One server process per core, as on a production node (docs/operations.md): on a 2-core
# machine the reference's nginx, fcgiwrap and git processes run on both cores too.
WORKERS = int(os.environ.get("AGENT_LOOP_WORKERS", "2"))


def run_agents(loop: Callable[[int], None], seconds: float,
               counter: Iterator[int] | None = None) -> dict[str, Any]:
    """``loop(n)`` by AGENTS threads until ``seconds`` pass; loops/s and errors (``n`` from
    ``counter``, shared between rounds so that names never repeat)."""
    counter = counter if counter is not None else itertools.count()
    done, errors = [0], []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def agent() -> None:
        while time.monotonic() < deadline:
            try:
                loop(next(counter))
            except Exception as exc:  # counted and reported, never raised into the run
                with lock:
                    errors.append(type(exc).__name__)
                continue
            with lock:
                done[0] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=agent) for _ in range(AGENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {"loops": done[0], "loops_per_s": round(done[0] / elapsed, 2), "errors": len(errors),
            "seconds": elapsed}


def process_table() -> tuple[dict[int, int], dict[int, float]]:
    """Every process's parent and CPU seconds, its own and what it reaped (``/proc/*/stat``:
    utime, stime, cutime, cstime)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(x) for x in fields[11:15]) / tick
    return parents, times


def root_of(pid: int, roots: tuple[int, ...], parents: dict[int, int]) -> int:
    """The first of ``roots`` that ``pid`` is (or descends from), else 0."""
    at, hops = pid, 0
    while at not in (*roots, 0, 1) and hops < 64:
        at, hops = parents.get(at, 0), hops + 1
    return at if at in roots else 0


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used by ``root`` and every process under it, alive or already reaped
    (a reaped child's time is in its parent's ``cutime``): the difference over a round is
    what that round cost the machine, whatever else ran beside it."""
    parents, times = process_table()
    return sum(spent for pid, spent in times.items() if root_of(pid, (root,), parents) == root)


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class ReferenceGroup:
    """A cgroup v1 ``cpuacct`` group holding the reference's servers: fcgiwrap ignores
    ``SIGCHLD``, so its CGI processes are reaped by the kernel and their CPU time reaches no
    parent's ``cutime``; a cgroup counts it. None where no such group can be made."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def make(cls) -> ReferenceGroup | None:
        path = CPUACCT / f"artifactd-bench-{os.getpid()}"
        try:
            path.mkdir()
        except OSError:
            return None
        return cls(path)

    def adopt(self, pids: list[int]) -> None:
        for pid in pids:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def seconds(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (CPUACCT / "cgroup.procs").write_text(f"{pid}\n")
        with contextlib.suppress(OSError):
            self.path.rmdir()


def reference_pids(server_pid: int) -> tuple[list[int], list[int]]:
    """(every live process under the benchmark outside artifactd's server: the reference's
    nginx and fcgiwrap processes; those of them that are the benchmark's own children)."""
    me = os.getpid()
    parents, _times = process_table()
    found = [pid for pid in parents
             if pid != me and root_of(pid, (server_pid, me), parents) == me]
    return found, [pid for pid in found if parents.get(pid) == me]


def everything_cpu_seconds(group: ReferenceGroup | None, roots: list[int]) -> float:
    """CPU seconds of the benchmark and every process it started: its process tree, with the
    reference's servers counted by their cgroup where there is one (their CGI processes
    reach no ``cutime``: see ``ReferenceGroup``)."""
    me = os.getpid()
    parents, times = process_table()
    counted = (me,) if group is None else (*roots, me)  # the reference's trees: by the group
    total = sum(spent for pid, spent in times.items() if root_of(pid, counted, parents) == me)
    return total if group is None else total + group.seconds()


def combined(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one side as one figure: all its loops over all its time."""
    loops = sum(p["loops"] for p in parts)
    elapsed = sum(p["seconds"] for p in parts)
    cpu = sum(p["cpu_s"] for p in parts)
    return {"loops": loops, "loops_per_s": round(loops / elapsed, 2),
            "errors": sum(p["errors"] for p in parts), "rounds": [p["loops_per_s"] for p in parts],
            "cpu_ms_per_loop": round(cpu / max(loops, 1) * 1000, 1)}


def drain_trash(trash: Path, server_pid: int, limit: float = 60.0) -> float:
    """Wait until the server's sweeper has removed every repo deleted so far; returns the
    seconds to charge to the round: the server's CPU meanwhile over the cores. A delete moves
    the repo to ``trash`` and the sweeper removes it within a fraction of a second; a round
    that ended before it did would leave that work to the reference's round after it. The
    wait itself is not charged (in a steady stream the sweep runs beside the loops and takes
    their CPU, not their time): only the CPU it took is, as the loop time it displaces."""
    before = tree_cpu_seconds(server_pid)
    started = time.monotonic()
    while time.monotonic() - started < limit:
        with contextlib.suppress(FileNotFoundError):
            if not any(trash.iterdir()):
                break
        time.sleep(0.02)
    return (tree_cpu_seconds(server_pid) - before) / (os.cpu_count() or 1)


def make_seed(env: dict[str, str], work: Path) -> Path:
    """The work tree every agent pushes: one small commit on ``main``."""
    seed = work / "seed"
    seed.mkdir()
    git(env, "init", "-q", "-b", "main", cwd=seed)
    (seed / "notes.txt").write_text("an agent's notes\n")
    git(env, "add", "-A", cwd=seed)
    git(env, "commit", "-q", "-m", "first", cwd=seed)
    return seed


def run(quick: bool = False) -> dict[str, Any]:
    work = work_dir("agent-loop-")
    seconds = 8 if quick else 60
    rounds = 1 if quick else ROUNDS
    server = start_server(work / "data", extra_env={**UNLIMITED}, args=("--workers", str(WORKERS)))
    env = git_env(work / "home")
    seed = make_seed(env, work)
    clones = work / "clones"
    clones.mkdir()
    backend = serve_http_backend(work / "ref", {})
    cgi_url, stop_cgi = serve_cgi(work / "cgi", {})
    cgi_root = work / "cgi" / "cgi-root"
    http_root = work / "ref" / "http-root"
    load_start = os.getloadavg()[0]
    group = ReferenceGroup.make()
    assert server.process is not None
    every, roots = reference_pids(server.process.pid)
    if group is not None:
        group.adopt(every)
    try:
        local = threading.local()  # a keep-alive connection per agent

        def api() -> httpx.Client:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=server.ns_url(), timeout=60,
                                            headers={"Authorization": f"Bearer {server.token}"})
            client: httpx.Client = local.client
            return client

        def ours(n: int) -> None:
            client = api()
            made = client.post("/repos", json={"name": f"agent-{n}"})
            assert made.status_code == 200, made.text
            repo = made.json()["result"]
            header = f"http.extraHeader=Authorization: Bearer {repo['token']}"
            git(env, "-c", header, "push", "-q", repo["remote"], "main", cwd=seed)
            dest = clones / f"a{n}"
            git(env, "-c", header, "clone", "-q", repo["remote"], str(dest))
            shutil.rmtree(dest)
            read = client.get(f"/repos/agent-{n}/raw/main/notes.txt")
            assert read.content == b"an agent's notes\n", read.text
            assert client.delete(f"/repos/agent-{n}").status_code in (200, 202)

        reader = threading.local()

        def reference(n: int) -> None:
            assert backend.new_push_target is not None
            url = backend.new_push_target(n)  # git init --bare + http.receivepack
            git(env, "push", "-q", url, "main", cwd=seed)
            dest = clones / f"r{n}"
            git(env, "clone", "-q", url, str(dest))
            shutil.rmtree(dest)
            (cgi_root / f"push-{n}.git").symlink_to(http_root / f"push-{n}.git")
            if not hasattr(reader, "client"):
                reader.client = httpx.Client(timeout=60)
            read = reader.client.get(f"{cgi_url}/git/push-{n}.git/notes.txt")
            assert read.content == b"an agent's notes\n", read.text
            (cgi_root / f"push-{n}.git").unlink()
            shutil.rmtree(http_root / f"push-{n}.git")

        ours_rounds, reference_rounds = [], []
        ours_names, reference_names = itertools.count(), itertools.count()
        for _ in range(rounds):
            for side, loop, names in ((ours_rounds, ours, ours_names),
                                      (reference_rounds, reference, reference_names)):
                before = everything_cpu_seconds(group, roots)
                part = run_agents(loop, seconds / rounds, names)
                if loop is ours:  # its deletes' sweep belongs to its round, not the next
                    part["seconds"] += drain_trash(work / "data" / "trash", server.process.pid)
                part["cpu_s"] = everything_cpu_seconds(group, roots) - before
                side.append(part)
        artifactd, plain = combined(ours_rounds), combined(reference_rounds)
    finally:
        server.stop()
        stop_cgi()
        backend.stop()
        if group is not None:
            group.remove()
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()[0]
    return {"machine": machine(), "agents": AGENTS, "seconds": seconds, "rounds": rounds,
            "workers": WORKERS, "cgi_cpu_counted": group is not None,
            "load_start": round(load_start, 1), "load_end": round(load_end, 1),
            "artifactd": artifactd,
            "reference": plain,
            "ratio": round(artifactd["loops_per_s"] / max(plain["loops_per_s"], 0.01), 2),
            "cpu_ratio": round(plain["cpu_ms_per_loop"] / max(artifactd["cpu_ms_per_loop"], 0.1), 2)}


def targets(results: dict[str, Any]) -> list[Target]:
    return [Target(f"agent loop, {results['agents']} agents, vs git init --bare + http-backend",
                   f">= {TARGET_RATIO}x", f"{results['ratio']:.2f}x "
                   f"({results['artifactd']['loops_per_s']} vs {results['reference']['loops_per_s']} loops/s)",
                   results["ratio"] >= TARGET_RATIO
                   and results["artifactd"]["errors"] == 0)]


def render(results: dict[str, Any]) -> str:
    a, r = results["artifactd"], results["reference"]
    return "\n".join([
        f"Command: `python -m bench.agent_loop`. Machine: {results['machine']}.",
        "",
        f"{results['agents']} agents, each looping for {results['seconds']} s: create a repo, push "
        "one small commit (git CLI), clone it, read a file over HTTP, delete the repo. The "
        "reference does the same with `git init --bare`, C `git http-backend` (nginx + fcgiwrap), "
        "a CGI `git cat-file` and `rm -rf`, in the same run.",
        "",
        "| server | loops/s | loops | errors |",
        "|---|---|---|---|",
        f"| artifactd | **{a['loops_per_s']}** | {a['loops']} | {a['errors']} |",
        f"| `git init --bare` + `git http-backend` (reference) | {r['loops_per_s']} | {r['loops']} | "
        f"{r['errors']} |",
        "",
        f"Ratio: **{results['ratio']:.2f}x** (target at least {TARGET_RATIO}x).",
        "",
        f"CPU per loop, everything the benchmark started (clients, servers, their children): "
        f"artifactd {a.get('cpu_ms_per_loop', 'n/a')} ms, reference "
        f"{r.get('cpu_ms_per_loop', 'n/a')} ms: {results.get('cpu_ratio', 'n/a')}x, the "
        "throughput ratio a machine with nothing else to run would show if both sides kept "
        "its cores busy (it does not depend on what else runs beside the benchmark). "
        + ("The reference's servers are counted through a `cpuacct` cgroup (fcgiwrap's CGI "
           "processes are reaped by the kernel and reach no parent's `cutime`)."
           if results.get("cgi_cpu_counted") else
           "No `cpuacct` cgroup could be made here, so the reference's CGI processes are not "
           "counted and its figure is too low.")
        + " Where each step's CPU goes: `python -m bench.loop_cpu`.",
        "",
        f"Server: `artifactd serve --workers {results.get('workers', 1)}` (one worker per core; "
        "the reference's nginx, fcgiwrap and git processes run on both cores too). "
        f"The sides took turns in {results.get('rounds', 1)} rounds each (artifactd first; "
        f"loops/s per round: artifactd {a.get('rounds', [])}, reference {r.get('rounds', [])}), "
        f"on a 2-core machine shared with other work: load average "
        f"{results.get('load_start', 'n/a')} at the start, {results.get('load_end', 'n/a')} at "
        "the end.",
    ])


if __name__ == "__main__":
    out = run("--quick" in sys.argv)
    print(out)
    print(render(out))
