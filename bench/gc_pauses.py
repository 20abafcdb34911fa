"""Garbage-collector pauses inside a serving process, with and without ``http/heap.py``.

The app runs in this process (``httpx.ASGITransport``, so the collector's pauses are the
only difference between the phases, not sockets or scheduling), with a few repos; a client
sends sequential ``GET /repos/:name`` in rounds that alternate two phases: Python's default
collector (thresholds 700/10/10, nothing frozen) and the server's (``heap.settle()``: the
start-up heap frozen, young threshold raised). ``gc.callbacks`` time every collection.
The figures: the longest pause, the pauses per 1,000 requests and the GET p99 per phase.

    python -m bench.gc_pauses [--quick] [--no-write]
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import shutil
import time
from typing import Any

import httpx

from artifactd.config import Settings
from artifactd.http import heap
from artifactd.http.app import create_app
from artifactd.services.access import accounts
from artifactd.services.backend import Backend
from bench.common import Target, bench_main, machine, summary, work_dir

DEFAULT_THRESHOLD = (700, 10, 10)


class PauseClock:
    """Every collection's duration, by generation, while ``recording``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: list[tuple[int, float]] = []
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self.started))

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


def _default_collector() -> None:
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_THRESHOLD)


async def _measure(quick: bool) -> dict[str, Any]:
    rounds, per_round = (2, 300) if quick else (10, 3000)
    logging.disable(logging.INFO)  # the access log would time the terminal, not the server
    work = work_dir("gc-pauses-")
    backend = Backend.open(Settings(data_dir=str(work / "data"), rate_limit_control="100000000/10s"))
    try:
        row, token = accounts.create_api_token(backend, secrets.token_hex(16), "edit")
        app = create_app(backend)
        transport = httpx.ASGITransport(app=app)
        base = f"http://bench/client/v4/accounts/{row.account_id}/artifacts/namespaces/default"
        async with httpx.AsyncClient(transport=transport, base_url=base,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            names = [f"gc-{i}" for i in range(20)]
            for name in names:
                assert (await client.post("/repos", json={"name": name})).status_code == 200
            phases: dict[str, dict[str, list[Any]]] = {
                p: {"latency": [], "pauses": []} for p in ("default", "settled")}
            clock = PauseClock()
            try:
                for i in range(rounds):
                    for phase in (("default", "settled") if i % 2 == 0 else ("settled", "default")):
                        _default_collector() if phase == "default" else heap.settle()
                        clock.pauses.clear()
                        for j in range(per_round):
                            started = time.perf_counter()
                            response = await client.get(f"/repos/{names[j % len(names)]}")
                            phases[phase]["latency"].append(time.perf_counter() - started)
                            assert response.status_code == 200, response.text
                        phases[phase]["pauses"] += clock.pauses
            finally:
                clock.close()
                _default_collector()
    finally:
        backend.close()
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {"machine": machine(), "requests_per_phase": rounds * per_round}
    for phase, data in phases.items():
        pauses = data["pauses"]
        full = [s for gen, s in pauses if gen == 2]
        out[phase] = {
            "get": summary(data["latency"]),
            "collections_per_1000": round(1000 * len(pauses) / len(data["latency"]), 1),
            "full_collections": len(full),
            "longest_pause_ms": round(1000 * max((s for _g, s in pauses), default=0.0), 3),
            "longest_full_ms": round(1000 * max(full, default=0.0), 3),
        }
    return out


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_measure(quick))


def targets(results: dict[str, Any]) -> list[Target]:
    default, settled = results["default"], results["settled"]
    return [Target("Longest GC pause serving GETs, server's collector vs Python's default",
                   "< 0.5x", f"{settled['longest_pause_ms']:.2f} vs "
                   f"{default['longest_pause_ms']:.2f} ms",
                   settled["longest_pause_ms"] < 0.5 * default["longest_pause_ms"])]


def render(results: dict[str, Any]) -> str:
    rows = []
    for phase, label in (("default", "Python's default (reference)"),
                         ("settled", "`heap.settle()` (the server)")):
        r = results[phase]
        rows.append(f"| {label} | {r['get']['p50_ms']:.2f} | {r['get']['p99_ms']:.2f} | "
                    f"{r['collections_per_1000']} | {r['full_collections']} | "
                    f"{r['longest_full_ms']:.2f} | {r['longest_pause_ms']:.2f} |")
    return "\n".join([
        f"Command: `python -m bench.gc_pauses`. Machine: {results['machine']}.",
        "",
        "The app in process (`httpx.ASGITransport`), SQLite, sequential `GET /repos/:name`, "
        f"{results['requests_per_phase']:,} per phase in alternating rounds; every collection "
        "timed with `gc.callbacks`.",
        "",
        "| collector | GET p50 (ms) | GET p99 (ms) | collections per 1,000 GETs | full "
        "collections | longest full (ms) | longest pause (ms) |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    bench_main("Garbage-collector pauses", run, render, __doc__)
