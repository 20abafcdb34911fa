"""Cost of recording analytics events on the control-plane create benchmark.

Two servers on two data dirs, identical but for ``ARTIFACTD_ANALYTICS_ENABLED``; creates
per second with 16 concurrent clients (wrk), measured in alternating rounds so drift in the
machine's load hits both alike. Target: recording costs under 3%.

    python -m bench.events_overhead [--quick]
"""

from __future__ import annotations

import shutil
import statistics
import sys
from typing import Any

from bench.common import UNLIMITED, Target, machine, start_server, work_dir
from bench.control_plane import creates_concurrent


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 2 if quick else 5
    seconds = 2 if quick else 10
    dirs = {mode: work_dir(f"ev-{mode}-") for mode in ("on", "off")}
    servers = {}
    try:
        for mode, flag in (("on", "true"), ("off", "false")):
            servers[mode] = start_server(dirs[mode], extra_env={**UNLIMITED, "ARTIFACTD_ANALYTICS_ENABLED": flag})
        rates: dict[str, list[int]] = {"on": [], "off": []}
        for _ in range(rounds):
            for mode in ("off", "on"):
                server = servers[mode]
                result = creates_concurrent(server.ns_url("ev") + "/repos", server.token, seconds)
                assert result["non_2xx"] == 0, result
                rates[mode].append(result["creates_per_s"])
    finally:
        for server in servers.values():
            server.stop()
        for path in dirs.values():
            shutil.rmtree(path, ignore_errors=True)
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    return {"machine": machine(), "rounds": rounds, "seconds": seconds, "rates": rates,
            "median_on": on, "median_off": off, "overhead_pct": round((off - on) / off * 100, 2)}


def targets(results: dict[str, Any]) -> list[Target]:
    pct = results["overhead_pct"]
    return [Target("analytics recording overhead on creates/s", "< 3%", f"{pct:.1f}%", pct < 3)]


def render(results: dict[str, Any]) -> str:
    return "\n".join([
        f"Command: `python -m bench.events_overhead`. {results['rounds']} alternating rounds of "
        f"{results['seconds']} s, 16 concurrent clients (wrk), one worker each, SQLite.",
        "",
        "| analytics recording | creates/s (median) | rounds |",
        "|---|---|---|",
        f"| off | {results['median_off']:.0f} | {results['rates']['off']} |",
        f"| on | {results['median_on']:.0f} | {results['rates']['on']} |",
        "",
        f"Overhead: **{results['overhead_pct']:.1f}%** (target < 3%; negative means within noise).",
    ])


if __name__ == "__main__":
    out = run("--quick" in sys.argv)
    print(render(out))
