"""Server CPU per agent loop: one agent runs the loop of ``bench.agent_loop`` (create, push one
small commit, clone, read a file, delete) ``--loops`` times in a row against a one-worker
server, and the CPU time of the server's processes and threads over those loops (from
``/proc/<pid>/task/*/schedstat``, nanoseconds, the webhook worker included) is divided by
the loops, in all and per step.

Unlike loops/s this hardly depends on what else runs on the machine (a loaded machine makes
each figure a little higher, for both sides of a comparison): compare two versions by
alternating runs of each (``PYTHONPATH=<checkout>/src python -m bench.server_cpu``).

    python -m bench.server_cpu [--loops 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections import defaultdict
from pathlib import Path

import httpx

from bench.agent_loop import make_seed
from bench.common import UNLIMITED, start_server, work_dir
from bench.scale import git, git_env

WARM_UP_LOOPS = 5
STEPS = ("create", "push", "clone", "read", "delete")


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    children[int(stat.read().rsplit(")", 1)[1].split()[1])].append(int(entry))
            except OSError:
                continue
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def _cpu_ns(pids: list[int]) -> int:
    """Run time of every thread of ``pids`` (a thread that ended took its time with it: the
    server's threads live as long as it does)."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                    total += int(stat.read().split()[0])
            except OSError:
                continue
    return total


def run(loops: int = 60) -> dict[str, float]:
    work = work_dir("server-cpu-")
    server = start_server(work / "data", extra_env={**UNLIMITED})
    try:
        env = git_env(work / "home")
        seed = make_seed(env, work)
        client = httpx.Client(base_url=server.ns_url(), timeout=60,
                              headers={"Authorization": f"Bearer {server.token}"})
        spent = dict.fromkeys(STEPS, 0)
        pids: list[int] = []

        def loop(n: int, measured: bool) -> None:
            marks = []

            def mark() -> None:
                if measured:
                    marks.append(_cpu_ns(pids))

            mark()
            made = client.post("/repos", json={"name": f"agent-{n}"})
            assert made.status_code == 200, made.text
            repo = made.json()["result"]
            mark()
            header = f"http.extraHeader=Authorization: Bearer {repo['token']}"
            git(env, "-c", header, "push", "-q", repo["remote"], "main", cwd=seed)
            mark()
            dest = work / f"clone-{n}"
            git(env, "-c", header, "clone", "-q", repo["remote"], str(dest))
            shutil.rmtree(dest)
            mark()
            read = client.get(f"/repos/agent-{n}/raw/main/notes.txt")
            assert read.content == b"an agent's notes\n", read.text
            mark()
            assert client.delete(f"/repos/agent-{n}").status_code in (200, 202)
            mark()
            for step, before, after in zip(STEPS, marks, marks[1:]):
                spent[step] += after - before

        for n in range(WARM_UP_LOOPS):  # the worker learns its advertisements, opens its pools
            loop(10_000 + n, measured=False)
        pids = _process_tree(server.process.pid)
        for n in range(loops):
            loop(n, measured=True)
        client.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    per_loop = {step: round(ns / loops / 1e6, 2) for step, ns in spent.items()}
    return {"server_cpu_ms_per_loop": round(sum(spent.values()) / loops / 1e6, 2), **per_loop,
            "load": round(os.getloadavg()[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=60)
    result = run(parser.parse_args().loops)
    steps = ", ".join(f"{step} {result[step]}" for step in STEPS)
    print(f"server CPU per loop: {result['server_cpu_ms_per_loop']} ms ({steps}; "
          f"load {result['load']}) from {Path(__file__).name}")


if __name__ == "__main__":
    main()
