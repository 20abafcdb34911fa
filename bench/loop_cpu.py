"""Where an agent loop's CPU goes, on both sides of ``bench.agent_loop``: one agent runs the
loop (create, push one small commit, clone, read a file, delete) ``--loops`` times against
artifactd and against the reference (``git init --bare``, C ``git http-backend`` behind nginx
+ fcgiwrap, a CGI ``git cat-file``, ``rm -rf``), alternating loop by loop, and each step's CPU
time is split between:

- the git clients (``git push``, ``git clone`` and every process they start; for the
  reference's create, ``git init --bare``): the bench's reaped children (``RUSAGE_CHILDREN``);
- the benchmark's own Python (its HTTP requests): ``RUSAGE_SELF``;
- artifactd's server: its processes and what they reaped (``/proc/<pid>/stat``: maintenance's
  git processes count here);
- the reference's servers (nginx, fcgiwrap and the CGI processes they start): a ``cpuacct``
  cgroup holding them (``bench.agent_loop.ReferenceGroup``: the kernel reaps fcgiwrap's
  children, so no ``cutime`` has them); without one, the live processes alone, too low.

16 agents on 2 cores keep both cores busy on both sides, so loops/s follows CPU per loop: this
tells how much of the loop the server can change at all (the clients are the same programs
on both sides).

    python -m bench.loop_cpu [--loops 40]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.agent_loop import ReferenceGroup, make_seed, process_table, reference_pids, root_of
from bench.common import UNLIMITED, start_server, work_dir
from bench.dense import serve_cgi
from bench.git_plane import serve_http_backend
from bench.scale import git, git_env

WARM_UP_LOOPS = 5
STEPS = ("create", "push", "clone", "read", "delete")
PARTS = ("clients", "bench", "artifactd", "reference servers")


class Meter:
    """CPU seconds of each part since the last ``read``; the meter's own reading of ``/proc``
    is left out of the benchmark's part."""

    def __init__(self, server_pid: int, group: ReferenceGroup | None):
        self.server_pid = server_pid
        self.group = group
        self.overhead = 0.0
        self.last = self._now()

    def _trees(self) -> tuple[float, float]:
        """(artifactd's server tree, every other live process under the benchmark: the
        reference's servers), each with what its processes reaped (``cutime``, ``cstime``);
        the reference's from its cgroup when there is one."""
        parents, times = process_table()
        me, server, reference = os.getpid(), 0.0, 0.0
        for pid, spent in times.items():
            root = root_of(pid, (self.server_pid, me), parents)
            if root == self.server_pid:
                server += spent
            elif root == me and pid != me:
                reference += spent
        return server, (reference if self.group is None else self.group.seconds())

    def _now(self) -> tuple[float, float, float, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server, reference = self._trees()
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.overhead = (after.ru_utime + after.ru_stime) - (own.ru_utime + own.ru_stime)
        return (children.ru_utime + children.ru_stime, own.ru_utime + own.ru_stime,
                server, reference)

    def read(self) -> tuple[float, float, float, float]:
        overhead = self.overhead
        now = self._now()
        clients, own, server, reference = (b - a for a, b in zip(self.last, now, strict=True))
        self.last = now
        return clients, max(own - overhead, 0.0), server, reference


def run(loops: int = 40) -> dict[str, dict[str, dict[str, float]]]:
    work = work_dir("loop-cpu-")
    server = start_server(work / "data", extra_env={**UNLIMITED})
    reference = serve_http_backend(work / "ref", {})
    cgi_url, stop_cgi = serve_cgi(work / "cgi", {})
    cgi_root, http_root = work / "cgi" / "cgi-root", work / "ref" / "http-root"
    group = ReferenceGroup.make()
    spent: dict[str, dict[str, list[float]]] = {
        side: {step: [0.0] * len(PARTS) for step in STEPS} for side in ("artifactd", "reference")}
    try:
        env = git_env(work / "home")
        seed = make_seed(env, work)
        api = httpx.Client(base_url=server.ns_url(), timeout=60,
                           headers={"Authorization": f"Bearer {server.token}"})
        plain = httpx.Client(timeout=60)
        meter: Meter | None = None

        def step(side: str, name: str, work_: Callable[[], object]) -> None:
            if meter is not None:
                meter.read()
            work_()
            if meter is not None:
                for index, seconds in enumerate(meter.read()):
                    spent[side][name][index] += seconds

        def ours(n: int) -> None:
            repo: dict[str, str] = {}

            def create() -> None:
                made = api.post("/repos", json={"name": f"agent-{n}"})
                assert made.status_code == 200, made.text
                repo.update(made.json()["result"])

            step("artifactd", "create", create)
            header = f"http.extraHeader=Authorization: Bearer {repo['token']}"
            step("artifactd", "push", lambda: git(env, "-c", header, "push", "-q",
                                                  repo["remote"], "main", cwd=seed))
            step("artifactd", "clone", lambda: git(env, "-c", header, "clone", "-q",
                                                   repo["remote"], str(work / f"a{n}")))
            shutil.rmtree(work / f"a{n}")
            step("artifactd", "read", lambda: api.get(f"/repos/agent-{n}/raw/main/notes.txt"))
            step("artifactd", "delete", lambda: api.delete(f"/repos/agent-{n}"))

        def theirs(n: int) -> None:
            new_target = reference.new_push_target
            assert new_target is not None
            url: list[str] = []
            step("reference", "create", lambda: url.append(new_target(n)))
            step("reference", "push", lambda: git(env, "push", "-q", url[0], "main", cwd=seed))
            step("reference", "clone", lambda: git(env, "clone", "-q", url[0],
                                                   str(work / f"r{n}")))
            shutil.rmtree(work / f"r{n}")
            (cgi_root / f"push-{n}.git").symlink_to(http_root / f"push-{n}.git")
            step("reference", "read",
                 lambda: plain.get(f"{cgi_url}/git/push-{n}.git/notes.txt"))
            (cgi_root / f"push-{n}.git").unlink()
            step("reference", "delete", lambda: shutil.rmtree(http_root / f"push-{n}.git"))

        assert server.process is not None
        if group is not None:
            group.adopt(reference_pids(server.process.pid)[0])
        for n in range(WARM_UP_LOOPS):
            ours(10_000 + n)
            theirs(10_000 + n)
        meter = Meter(server.process.pid, group)
        for n in range(loops):
            ours(n)
            theirs(n)
        api.close()
        plain.close()
    finally:
        server.stop()
        stop_cgi()
        reference.stop()
        if group is not None:
            group.remove()
        shutil.rmtree(work, ignore_errors=True)
    return {side: {name: {part: round(seconds / loops * 1000, 2)
                          for part, seconds in zip(PARTS, parts, strict=True)}
                   for name, parts in steps.items()}
            for side, steps in spent.items()}


def inode_cost_us(count: int = 300) -> float:
    """Kernel CPU per new inode (a directory and a file in it, alternately) on the filesystem
    the benchmark works on: the clients' clones and every new repo pay it, on both sides."""
    base = Path(tempfile.mkdtemp(prefix="inodes-", dir=work_dir("loop-cpu-inodes-")))
    try:
        started = time.process_time()
        for n in range(count):
            os.mkdir(base / f"d{n}")
            (base / f"d{n}" / "HEAD").touch()
        return (time.process_time() - started) / (2 * count) * 1e6
    finally:
        shutil.rmtree(base.parent, ignore_errors=True)


def render(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| side | step | " + " | ".join(f"{part} (ms)" for part in PARTS) + " | all (ms) |",
             "|---|---|" + "---|" * (len(PARTS) + 1)]
    for side, steps in results.items():
        totals = dict.fromkeys(PARTS, 0.0)
        for name, parts in steps.items():
            lines.append(f"| {side} | {name} | " + " | ".join(f"{parts[p]:.1f}" for p in PARTS)
                         + f" | {sum(parts.values()):.1f} |")
            for part in PARTS:
                totals[part] += parts[part]
        lines.append(f"| {side} | **loop** | " + " | ".join(f"{totals[p]:.1f}" for p in PARTS)
                     + f" | **{sum(totals.values()):.1f}** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=40)
    results = run(parser.parse_args().loops)
    print(f"CPU per agent loop, one agent (load {os.getloadavg()[0]:.1f}), "
          f"from {Path(__file__).name}:")
    print(render(results))
    print(f"Kernel CPU per new inode on the benchmark's filesystem: {inode_cost_us():.0f} µs")


if __name__ == "__main__":
    main()
