"""Event delivery: webhook latency, sustained delivery rate, and create overhead (issue 14).

- latency: one webhook subscription to a loopback receiver; repos created one at a time;
  latency is the receiver's arrival time minus the event's ``eventTimestamp`` (same clock).
- sustained: the subscription paused while a burst of creates fills the outbox, then
  resumed; events delivered per second until the receiver has them all.
- overhead: creates/s (16 concurrent clients, wrk) on two servers, identical but for one
  active webhook subscription on one of them (to nginx answering 204), in alternating
  rounds; median of the rounds.

    python -m bench.events [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench.common import UNLIMITED, Target, machine, percentile, work_dir
from bench.control_plane import creates_concurrent
from bench.events_kill import patient_server
from bench.receivers import NginxReceiver

ENV = {**UNLIMITED, "ARTIFACTD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                arrived = time.time()
                with receiver.lock:
                    receiver.arrivals.append((arrived, json.loads(body)))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _start(prefix: str) -> tuple[Any, Path]:
    """A server on a fresh data dir, waited for patiently (start-up on a loaded machine can
    pass the harness's 30 s, and is not what is measured)."""
    path = work_dir(prefix)
    return patient_server(path, ENV), path


def _subscribe(server: Any, url: str) -> str:
    r = httpx.post(f"{server.account_url}/subscriptions", timeout=30,
                   headers={"Authorization": f"Bearer {server.token}"},
                   json={"name": "bench", "source": {"type": "artifacts"},
                         "event_types": ["cf.artifacts.repo.created"],
                         "destination": {"type": "webhook", "url": url}})
    assert r.status_code == 201, r.text
    return str(r.json()["result"]["id"])


def _wait(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("events were not delivered in time")
        time.sleep(0.005)


def _stamp(event: dict[str, Any]) -> float:
    text = event["metadata"]["eventTimestamp"].replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def latency_and_rate(quick: bool) -> dict[str, Any]:
    samples = 30 if quick else 300
    receiver = Receiver()
    server, path = _start("ev-latency-")
    try:
        sub = _subscribe(server, receiver.url)
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.ns_url("bench"), headers=headers, timeout=30) as c:
            for i in range(samples):
                before = receiver.count()
                assert c.post("/repos", json={"name": f"lat-{i}"}).status_code == 200
                _wait(lambda b=before: receiver.count() > b, 30)
            with receiver.lock:
                latencies = [arrived - _stamp(event) for arrived, event in receiver.arrivals]
            subs = f"{server.account_url}/subscriptions/{sub}"
            assert httpx.post(f"{subs}/pause", headers=headers).status_code == 200
            result = creates_concurrent(server.ns_url("burst") + "/repos", server.token,
                                        2 if quick else 6)
            assert result["non_2xx"] == 0, result
            time.sleep(0.5)
            start_count = receiver.count()
            started = time.monotonic()
            assert httpx.post(f"{subs}/resume", headers=headers).status_code == 200
            pending = httpx.get(f"{server.ns_url('burst')}/repos", headers=headers,
                                params={"limit": 1}).json()["result_info"].get("total_count")
            total = int(pending)
            _wait(lambda: receiver.count() - start_count >= total, 300)
            elapsed = time.monotonic() - started
    finally:
        server.stop()
        receiver.stop()
        shutil.rmtree(path, ignore_errors=True)
    ms = sorted(x * 1000 for x in latencies)
    return {"samples": samples, "p50_ms": round(percentile(ms, 0.5), 1),
            "p99_ms": round(percentile(ms, 0.99), 1), "burst": total,
            "events_per_s": round(total / elapsed)}


def _delivered(server: Any) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith('artifactd_event_deliveries_total{outcome="delivered"}'):
            return float(line.split()[-1])
    return 0.0


def _created(server: Any) -> int:
    return int(httpx.get(f"{server.ns_url('ov')}/repos", params={"limit": 1}, timeout=60,
                         headers={"Authorization": f"Bearer {server.token}"},
                         ).json()["result_info"]["total_count"])


def _cpu(server: Any) -> tuple[float, float]:
    """CPU seconds used so far by the server process and by its delivery worker (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    pid = server.process.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        workers = [int(c) for c in children
                   if b"webhook_worker" in Path(f"/proc/{c}/cmdline").read_bytes()]
        return used(pid), sum(used(w) for w in workers)
    except OSError:  # not Linux, or a worker that just ended: no CPU figure this round
        return 0.0, 0.0


def overhead(quick: bool) -> dict[str, Any]:
    """Creates/s without and with one active webhook subscription, alternating rounds.

    The receiver is nginx answering 204 (C, one worker): a Python receiver on the same two
    cores would take CPU from the server being measured, and the receiver is not what is
    measured. Every event of the measured server is checked delivered at the end."""
    rounds = 3 if quick else 12
    seconds = 2 if quick else 5
    base = work_dir("ev-ov-")
    receiver = NginxReceiver(base / "nginx")
    servers: dict[str, Any] = {}
    paths: list[Path] = []
    try:
        for mode in ("with", "without"):
            servers[mode], path = _start(f"ev-{mode}-")
            paths.append(path)
        _subscribe(servers["with"], receiver.url)
        rates: dict[str, list[int]] = {"with": [], "without": []}
        lags: list[int] = []
        cpu: dict[str, dict[str, list[float]]] = {
            mode: {"server": [], "worker": []} for mode in ("with", "without")}
        for i in range(rounds):
            # ABBA order: a drift in the machine's load favours neither side.
            for mode in ("without", "with") if i % 2 == 0 else ("with", "without"):
                server = servers[mode]
                before, cpu_before = _created(server), _cpu(server)
                result = creates_concurrent(server.ns_url("ov") + "/repos", server.token, seconds)
                assert result["non_2xx"] == 0, result
                rates[mode].append(result["creates_per_s"])
                created = _created(server)
                if mode == "with":
                    # Events not yet delivered when the round ended (delivery that fell
                    # behind would flatter the round); drained before the next round, so
                    # that no round pays for another's deliveries.
                    lags.append(created - int(_delivered(server)))
                    _wait(lambda: _delivered(server) >= created, 300)
                used = [after - was for after, was in zip(_cpu(server), cpu_before, strict=True)]
                for name, seconds_used in zip(("server", "worker"), used, strict=True):
                    cpu[mode][name].append(seconds_used * 1000 / max(created - before, 1))
    finally:
        for server in servers.values():
            server.stop()
        receiver.stop()
        for path in [base, *paths]:
            shutil.rmtree(path, ignore_errors=True)
    on, off = statistics.median(rates["with"]), statistics.median(rates["without"])
    # Each round's pair ran back to back: the median of their ratios is the steadier figure
    # on a shared machine, whose load moves both sides of a pair alike.
    paired = statistics.median(1 - w / wo for w, wo in zip(rates["with"], rates["without"],
                                                           strict=True))
    return {"rounds": rounds, "seconds": seconds, "rates": rates, "median_with": on,
            "median_without": off, "overhead_pct": round((off - on) / off * 100, 2),
            "paired_overhead_pct": round(paired * 100, 2), "delivered": created,
            "lag_at_round_end": lags,
            "cpu_ms_per_create": {mode: {name: round(statistics.median(values), 3)
                                         for name, values in by.items()}
                                  for mode, by in cpu.items()}}


def run(quick: bool = False) -> dict[str, Any]:
    return {"machine": machine(), "delivery": latency_and_rate(quick), "overhead": overhead(quick)}


def targets(results: dict[str, Any]) -> list[Target]:
    d, o = results["delivery"], results["overhead"]
    return [
        Target("event to webhook p50 (loopback)", "< 100 ms", f"{d['p50_ms']} ms", d["p50_ms"] < 100),
        Target("event to webhook p99 (loopback)", "< 500 ms", f"{d['p99_ms']} ms", d["p99_ms"] < 500),
        Target("sustained webhook delivery, one receiver", ">= 1000 events/s",
               f"{d['events_per_s']} events/s", d["events_per_s"] >= 1000),
        Target("creates/s overhead of one active subscription", "< 5%",
               f"{o['overhead_pct']:.1f}%", o["overhead_pct"] < 5),
    ]


def render(results: dict[str, Any]) -> str:
    d, o = results["delivery"], results["overhead"]
    return "\n".join([
        "Command: `python -m bench.events`. One worker, SQLite; latency and rate with a threaded "
        "Python loopback receiver answering 204 (keep-alive, it records arrival times), the "
        "overhead with nginx answering 204.",
        "",
        "| measurement | figure |",
        "|---|---|",
        f"| latency, event written to webhook received ({d['samples']} sequential creates) | "
        f"p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms |",
        f"| sustained delivery (backlog of {d['burst']} events, subscription resumed) | "
        f"{d['events_per_s']} events/s |",
        f"| creates/s without / with one active webhook subscription (median of "
        f"{o['rounds']} alternating rounds of {o['seconds']} s, 16 clients, receiver nginx "
        f"answering 204; all {o['delivered']} events delivered) | {o['median_without']:.0f} / "
        f"{o['median_with']:.0f} ({o['overhead_pct']:.1f}% overhead; median of the rounds' "
        f"paired ratios {o['paired_overhead_pct']:.1f}%) |",
        "",
        f"Rounds (creates/s): without {o['rates']['without']}, with {o['rates']['with']}; "
        f"events not yet delivered at the end of each round with the subscription: "
        f"{o['lag_at_round_end']} (drained before the next round).",
        "",
        "CPU per create (median of the rounds; the worker's includes delivering the round's "
        "events): "
        f"server {o['cpu_ms_per_create']['without']['server']} ms without, "
        f"{o['cpu_ms_per_create']['with']['server']} ms with the subscription; delivery worker "
        f"{o['cpu_ms_per_create']['without']['worker']} ms without, "
        f"{o['cpu_ms_per_create']['with']['worker']} ms with.",
    ])


if __name__ == "__main__":
    out = run("--quick" in sys.argv)
    print(render(out))
    for target in targets(out):
        print(target)
