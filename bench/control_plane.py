"""Control-plane benchmark: create throughput, and get/list/token latency at 1k, 100k, 1M repos.

Big namespaces are seeded directly through the metadata store (a bulk insert), then a real
server is started on the same data dir and measured over HTTP. Concurrent creates are
driven by ``wrk`` (C, so the load generator leaves the CPU to the server) with a Lua script
that gives every request a unique repo name; everything else is a sequential httpx loop.

    python -m bench.control_plane [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from artifactd.config import Settings
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from bench.common import (
    UNLIMITED,
    Target,
    machine,
    start_server,
    summary,
    time_calls,
    work_dir,
    write_section,
)

# Every request gets a unique name: a per-run prefix, the wrk thread number and a counter
# (wrk's math.random is unseeded, so it cannot be used for uniqueness).
WRK_CREATE_LUA = """
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"name":"PREFIX-%d-%d"}', tid, counter)
  return wrk.format("POST", nil, nil, body)
end
"""


def seed(data_dir: Path, namespace: str, count: int, account_id: str) -> None:
    """Insert ``count`` repos into ``namespace`` directly (chunks of 20k rows)."""
    backend = Backend.open(Settings(data_dir=str(data_dir)))
    try:
        backend.meta.ensure_namespace(account_id, namespace, now_us())
        base = now_us() - count * 1000
        chunk: list[dict[str, Any]] = []
        for i in range(count):
            ts = base + i * 1000
            chunk.append({
                "id": uuid.uuid4().hex, "account_id": account_id, "namespace": namespace,
                "name": f"seed-{i:07d}", "description": None, "default_branch": "main",
                "read_only": False, "source": None, "status": "ready", "status_reason": None,
                "created_us": ts, "updated_us": ts, "last_push_us": 0, "size_bytes": 0,
                "maintained_us": 0, "pushes_since_maintenance": 0, "import_spec": None,
            })
            if len(chunk) == 20_000:
                backend.meta.bulk_insert_repos(chunk)
                chunk = []
        if chunk:
            backend.meta.bulk_insert_repos(chunk)
    finally:
        backend.close()


def deep_cursor(data_dir: Path, account_id: str, namespace: str, count: int) -> str:
    """A cursor positioned half-way through the namespace (created_at desc)."""
    backend = Backend.open(Settings(data_dir=str(data_dir)), run_migrations=False)
    try:
        page = backend.meta.list_repos(
            account_id, namespace, sort="created_at", descending=True, limit=1,
            after=(now_us() - (count // 2) * 1000 - 500, "~"), search=None,
        )
        row = page[0]
        return backend.cursors.encode(
            {"s": "created_at", "d": "desc", "q": "", "v": row.created_us, "i": row.id}
        )
    finally:
        backend.close()


def latencies(client: httpx.Client, ns_url: str, count: int, cursor: str, n: int) -> dict[str, Any]:
    names = [f"seed-{random.randrange(count):07d}" for _ in range(n + 10)]

    def get(i: int) -> None:
        r = client.get(f"{ns_url}/repos/{names[i]}")
        assert r.status_code == 200, r.text

    def list_first(_i: int) -> None:
        r = client.get(f"{ns_url}/repos", params={"limit": 50})
        assert r.status_code == 200 and len(r.json()["result"]) == 50, r.text

    def list_deep(_i: int) -> None:
        r = client.get(f"{ns_url}/repos", params={"limit": 50, "cursor": cursor})
        assert r.status_code == 200 and len(r.json()["result"]) == 50, r.text

    def token(i: int) -> None:
        r = client.post(f"{ns_url}/tokens", json={"repo": names[i], "scope": "read", "ttl": 3600})
        assert r.status_code == 200, r.text

    def create(i: int) -> None:
        r = client.post(f"{ns_url}/repos", json={"name": f"lat-{uuid.uuid4().hex[:12]}"})
        assert r.status_code == 200, r.text

    return {
        "get": summary(time_calls(get, n)),
        "list_first_page": summary(time_calls(list_first, n)),
        "list_deep_cursor": summary(time_calls(list_deep, n)),
        "token_create": summary(time_calls(token, n)),
        "create": summary(time_calls(create, n)),
    }


def creates_sequential(client: httpx.Client, ns_url: str, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        r = client.post(f"{ns_url}/repos", json={"name": f"seq-{uuid.uuid4().hex[:16]}"})
        assert r.status_code == 200, r.text
    return n / (time.perf_counter() - started)


def creates_concurrent(url: str, token: str, seconds: int, connections: int = 16) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    script = work_dir("wrk-") / "create.lua"
    script.write_text(WRK_CREATE_LUA.replace("PREFIX", uuid.uuid4().hex[:10]))
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json", url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )
    out = result.stdout
    rps = float(out.split("Requests/sec:")[1].split()[0])
    errors = 0
    if "Non-2xx or 3xx responses:" in out:
        errors = int(out.split("Non-2xx or 3xx responses:")[1].split()[0])
    return {"creates_per_s": round(rps), "non_2xx": errors, "connections": connections}


def run(quick: bool = False) -> dict[str, Any]:
    sizes = [100, 1000] if quick else [1_000, 100_000, 1_000_000]
    n = 30 if quick else 300
    data_dir = work_dir("cp-")
    results: dict[str, Any] = {"machine": machine(), "sizes": {}}
    server = None
    try:
        # Seed before the server starts: an account is needed, so mint its token offline first.
        from artifactd.services.access import accounts

        backend = Backend.open(Settings(data_dir=str(data_dir)))
        _row, api_token = accounts.create_api_token(backend, None, "edit")
        account_id = _row.account_id
        backend.close()
        for size in sizes:
            seed(data_dir, f"size-{size}", size, account_id)
        server = start_server(data_dir, args=("--workers", "2"), extra_env=UNLIMITED)
        server.account_id, server.token = account_id, api_token
        headers = {"Authorization": f"Bearer {api_token}"}
        with httpx.Client(headers=headers, timeout=60) as client:
            for size in sizes:
                ns_url = server.ns_url(f"size-{size}")
                cursor = deep_cursor(data_dir, account_id, f"size-{size}", size)
                results["sizes"][size] = latencies(client, ns_url, size, cursor, n)
            results["creates_sequential_per_s"] = round(
                creates_sequential(client, server.ns_url("throughput-seq"), 100 if quick else 1000)
            )
        results["creates_concurrent"] = creates_concurrent(
            server.ns_url("throughput") + "/repos", api_token, 3 if quick else 15
        )
    finally:
        if server:
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


def targets(results: dict[str, Any]) -> list[Target]:
    sizes = list(results["sizes"])
    small, large = results["sizes"][sizes[0]], results["sizes"][sizes[-1]]
    rate = results["creates_concurrent"]["creates_per_s"]
    out = [Target("creates, 16 concurrent clients", ">= 1,000/s", f"{rate}/s", rate >= 1000)]
    for op in ("get", "list_first_page"):
        p99 = max(results["sizes"][s][op]["p99_ms"] for s in sizes)
        out.append(Target(f"{op} p99 (worst size)", "< 20 ms", f"{p99:.2f} ms", p99 < 20))
    for op in ("create", "get", "list_first_page", "list_deep_cursor"):
        ratio = large[op]["p50_ms"] / small[op]["p50_ms"]
        out.append(Target(f"{op} p50, {sizes[-1]:,} vs {sizes[0]:,} repos", "<= 1.5x",
                          f"{ratio:.2f}x", ratio <= 1.5))
    return out


def render(results: dict[str, Any]) -> str:
    sizes = list(results["sizes"])
    lines = [
        f"Machine: {results['machine']}. Server: `artifactd serve --workers 2`, SQLite, on the same "
        "machine as the load generator. Command: `python -m bench.control_plane`.",
        "",
        f"- Creates, sequential (one client, keep-alive): **{results['creates_sequential_per_s']}/s**",
        f"- Creates, {results['creates_concurrent']['connections']} concurrent clients (wrk): "
        f"**{results['creates_concurrent']['creates_per_s']}/s** "
        f"({results['creates_concurrent']['non_2xx']} non-2xx) — target ≥ 1,000/s",
        "",
        "| operation | " + " | ".join(f"{s:,} repos p50 / p99 (ms)" for s in sizes)
        + f" | {sizes[-1]:,} vs {sizes[0]:,} (p50) |",
        "|---|" + "---|" * (len(sizes) + 1),
    ]
    for op in ("get", "list_first_page", "list_deep_cursor", "token_create", "create"):
        cells = [f"{results['sizes'][s][op]['p50_ms']:.2f} / {results['sizes'][s][op]['p99_ms']:.2f}"
                 for s in sizes]
        ratio = results["sizes"][sizes[-1]][op]["p50_ms"] / results["sizes"][sizes[0]][op]["p50_ms"]
        lines.append(f"| {op} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    lines += ["", "Targets: get and list p99 < 20 ms; 1M-repo latency ≤ 1.5x the 1k-repo latency."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results = run(args.quick)
    print(json.dumps(results, indent=2))
    print(render(results))
    if not args.no_write:
        write_section("Control plane", render(results))


if __name__ == "__main__":
    main()
