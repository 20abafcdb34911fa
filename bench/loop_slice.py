"""GET latency beside CPU-bound work, with the event loop's short slice and without (issue 12).

Two servers (``--workers 2``, SQLite, 10,000 seeded repos each), one started with
``ARTIFACTD_LOOP_SLICE_US=0`` (the kernel's default slice for every thread) and one with the
default 100 µs for each worker's event loop thread (``artifactd.http.loop_slice``). A reader
sends sequential ``GET /repos/:name`` over one keep-alive connection while ``HOGS`` processes
spin on the CPU, the stand-in for git building packs and other bulk work on a busy node's
cores; then the same with no hogs. The servers take turns round by round, so a change in the
machine's load falls on both alike. Reported: each server's p50, p90 and p99, and the loaded
p99 of the short slice against the default's (lower is better; below 1.0 it helps).

    python -m bench.loop_slice [--quick] [--no-write]
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.at_scale import patient_server, seeded_account
from bench.common import Server, Target, bench_main, machine, percentile, work_dir

REPOS = 10_000
HOGS = 4  # two per core: every core has a spinning task beside whatever the server runs
SETTLE_GETS = 50  # GETs of each turn left uncounted: the hogs starting, a vCPU waking
SIDES = {"default slice": "0", "short loop slice": "100"}


def _hogs(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def _server(base: Path, name: str, slice_us: str) -> tuple[Server, str, str]:
    data_dir = base / name
    account_id, token = seeded_account(data_dir, "agents", REPOS)
    server = patient_server(data_dir, ("--workers", "2"),
                            settings={"ARTIFACTD_LOOP_SLICE_US": slice_us})
    ns_url = f"{server.url}/client/v4/accounts/{account_id}/artifacts/namespaces/agents"
    return server, ns_url, token


def _turn(ns_url: str, token: str, hogs: int, gets: int) -> list[float]:
    spinning = _hogs(hogs)
    try:
        time.sleep(0.3 if hogs else 0.0)
        samples = []
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            for n in range(SETTLE_GETS + gets):
                started = time.perf_counter()
                response = client.get(f"{ns_url}/repos/seed-{secrets.randbelow(REPOS):08d}")
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.text
                if n >= SETTLE_GETS:
                    samples.append(elapsed)
        return samples
    finally:
        for hog in spinning:
            hog.kill()
            hog.wait()


def _figures(samples: list[float]) -> dict[str, float]:
    return {f"p{int(q * 100)}_ms": round(percentile(samples, q) * 1000, 3)
            for q in (0.5, 0.9, 0.99)} | {"n": len(samples)}


def run(quick: bool = False) -> dict[str, Any]:
    rounds, gets = (2, 100) if quick else (8, 500)
    work = work_dir("loop-slice-")
    servers: dict[str, tuple[Server, str, str]] = {}
    try:
        for i, (side, slice_us) in enumerate(SIDES.items()):
            servers[side] = _server(work, f"s{i}", slice_us)
        samples: dict[str, dict[str, list[float]]] = {
            side: {"hogs": [], "quiet": []} for side in SIDES}
        for i in range(rounds):
            order = list(SIDES) if i % 2 == 0 else list(SIDES)[::-1]
            for side in order:
                _, ns_url, token = servers[side]
                samples[side]["hogs"] += _turn(ns_url, token, HOGS, gets)
                samples[side]["quiet"] += _turn(ns_url, token, 0, gets // 2)
        return {"machine": machine(), "repos": REPOS, "hogs": HOGS,
                "sides": {side: {phase: _figures(s) for phase, s in phases.items()}
                          for side, phases in samples.items()}}
    finally:
        for server, _url, _token in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _ratio(results: dict[str, Any], key: str) -> float:
    sides = results["sides"]
    return (float(sides["short loop slice"]["hogs"][key])
            / max(float(sides["default slice"]["hogs"][key]), 1e-6))


def targets(results: dict[str, Any]) -> list[Target]:
    return [Target("GET p99 beside 4 CPU-bound processes, short loop slice vs the kernel's "
                   "default", "reported (lower is better)",
                   f"{_ratio(results, 'p99_ms'):.2f}x", None)]


def render(results: dict[str, Any]) -> str:
    lines = [
        "Command: `python -m bench.loop_slice`. Machine: " + results["machine"] + ".",
        "",
        f"Two servers (`--workers 2`, SQLite, {results['repos']:,} repos each), taking turns: "
        "one with `ARTIFACTD_LOOP_SLICE_US=0` (the kernel's default slice everywhere), one "
        "with the default 100 µs slice for each worker's event loop thread. Sequential "
        f"`GET /repos/:name` over one keep-alive connection, beside {results['hogs']} "
        "processes spinning on the CPU (the stand-in for git building packs on a busy "
        "node), then with nothing else running. The first 50 GETs of every turn are not "
        "counted.",
        "",
        "| server | CPU hogs | p50 (ms) | p90 (ms) | p99 (ms) | GETs |",
        "|---|---|---|---|---|---|",
    ]
    for side, phases in results["sides"].items():
        for phase, label in (("hogs", str(results["hogs"])), ("quiet", "0")):
            f = phases[phase]
            lines.append(f"| {side} | {label} | {f['p50_ms']:.2f} | {f['p90_ms']:.2f} | "
                         f"{f['p99_ms']:.2f} | {f['n']} |")
    lines += ["", f"Beside the hogs, short slice against default: p90 "
              f"**{_ratio(results, 'p90_ms'):.2f}x**, p99 **{_ratio(results, 'p99_ms'):.2f}x**."]
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main("Event loop CPU slice", run, render, doc=__doc__)
