"""Read helpers benchmark: compare of a fork against its parent, and archive streaming.

Compare: a parent of 1,000 files (200 with ``--quick``), forked over HTTP; the fork then
gets one commit changing 100 of them (written into its directory with ``git fast-import``).
``GET .../compare/<parent>:main...main`` is timed as JSON and as ``text/x-diff``.

Archive: a repo of random blobs, ~200 MB (16 MB with ``--quick``), one pack.
``GET .../archive/main.zip`` is streamed to nowhere and compared with ``git archive
--format=zip`` of the same commit on disk to /dev/null, measured in the same run; the
server's resident memory is sampled while it streams (``/proc/<pid>/status``).

    python -m bench.reads [--quick] [--no-write]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    UNLIMITED,
    Target,
    bench_main,
    machine,
    start_server,
    summary,
    time_calls,
    work_dir,
)
from bench.fork import make_parent

COMPARE_TARGET_MS = 50.0
ARCHIVE_RATIO_TARGET = 1.2
CHANGED = 100


def _env(home: Path) -> dict[str, str]:
    return {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "PATH": "/usr/bin:/bin",
            "HOME": str(home)}


def _repo_dir(data: Path, repo_id: str) -> Path:
    return data / "repos" / repo_id[:2] / f"{repo_id}.git"


def _fast_import(git_dir: Path, script: bytes) -> None:
    subprocess.run(["git", f"--git-dir={git_dir}", "fast-import", "--quiet"], input=script,
                   check=True, env=_env(git_dir.parent), capture_output=True)


def _text_parent(git_dir: Path, files: int) -> None:
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(git_dir)], check=True,
                   env=_env(git_dir.parent))
    lines = [b"commit refs/heads/main\ncommitter Bench <b@example.com> 1700000000 +0000\n",
             b"data 4\nbase\n"]
    for i in range(files):
        body = "".join(f"line {j} of file {i}\n" for j in range(40)).encode()
        lines.append(f"M 100644 inline dir{i % 20}/file-{i:04d}.txt\n".encode())
        lines.append(b"data %d\n%s\n" % (len(body), body))
    _fast_import(git_dir, b"".join(lines))


def _change_fork(git_dir: Path, changed: int) -> None:
    lines = [b"commit refs/heads/main\ncommitter Agent <a@example.com> 1700000100 +0000\n",
             b"data 11\nagent work\n", b"from refs/heads/main^0\n"]
    for i in range(changed):
        body = "".join(f"line {j} of file {i}{' changed' if j % 7 == 0 else ''}\n"
                       for j in range(40)).encode()
        lines.append(f"M 100644 inline dir{i % 20}/file-{i:04d}.txt\n".encode())
        lines.append(b"data %d\n%s\n" % (len(body), body))
    _fast_import(git_dir, b"".join(lines))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _stream_seconds(url: str, token: str) -> tuple[float, int]:
    started = time.perf_counter()
    size = 0
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as r:
        assert r.status_code == 200, r.read()
        for chunk in r.iter_raw(1 << 16):
            size += len(chunk)
    return time.perf_counter() - started, size


def run(quick: bool = False) -> dict[str, Any]:
    base = work_dir("reads-")
    server = start_server(base / "data", extra_env=UNLIMITED)
    files = 200 if quick else 1000
    count = 20 if quick else 100
    archive_blobs, blob_bytes = (16, 1 << 20) if quick else (50, 4 << 20)
    try:
        with server.client() as c:
            parent = c.post("/repos", json={"name": "parent"}).json()["result"]["id"]
            parent_dir = _repo_dir(server.data_dir, parent)
            parent_dir.parent.mkdir(parents=True, exist_ok=True)
            _text_parent(parent_dir, files)
            fork = c.post("/repos/parent/fork", json={"name": "agent"})
            assert fork.status_code == 200, fork.text
            _change_fork(_repo_dir(server.data_dir, fork.json()["result"]["id"]), CHANGED)
            path = "/repos/agent/compare/parent:main...main"
            first = c.get(path).json()["result"]
            assert len(first["files"]) == CHANGED and first["ahead_by"] == 1, first
            compare_json = summary(time_calls(lambda _i: c.get(path), count))
            compare_diff = summary(time_calls(
                lambda _i: c.get(path, headers={"Accept": "text/x-diff"}), count))
            patch_bytes = len(c.get(path, headers={"Accept": "text/x-diff"}).content)

            big = c.post("/repos", json={"name": "big"}).json()["result"]["id"]
            big_dir = _repo_dir(server.data_dir, big)
            make_parent(big_dir, archive_blobs, blob_bytes)
        pack_bytes = sum(p.stat().st_size for p in (big_dir / "objects").rglob("*") if p.is_file())
        started = time.perf_counter()
        with open(os.devnull, "wb") as sink:
            subprocess.run(["git", f"--git-dir={big_dir}", "archive", "--format=zip", "main"],
                           stdout=sink, check=True, env=_env(base))
        disk_s = time.perf_counter() - started
        assert server.process is not None
        pid = server.process.pid
        rss_before = _rss_kib(pid)
        peak = [rss_before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], _rss_kib(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        http_s, size = _stream_seconds(f"{server.ns_url()}/repos/big/archive/main.zip", server.token)
        done.set()
        sampler.join()
        return {
            "machine": machine(), "files": files, "changed": CHANGED, "calls": count,
            "compare_json": compare_json, "compare_diff": compare_diff, "patch_bytes": patch_bytes,
            "archive_repo_bytes": pack_bytes, "archive_bytes": size,
            "git_archive_s": round(disk_s, 3), "http_archive_s": round(http_s, 3),
            "ratio": round(http_s / disk_s, 3) if disk_s else None,
            "rss_before_kib": rss_before, "rss_peak_kib": peak[0],
            "compare_target_ms": COMPARE_TARGET_MS,
        }
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def targets(results: dict[str, Any]) -> list[Target]:
    p50 = results["compare_json"]["p50_ms"]
    ratio = results["ratio"]
    growth_mb = (results["rss_peak_kib"] - results["rss_before_kib"]) / 1024
    return [
        Target(f"compare of a fork with {results['changed']} changed files, p50",
               f"< {COMPARE_TARGET_MS:g} ms", f"{p50:.1f} ms", p50 < COMPARE_TARGET_MS),
        Target(f"archive of {results['archive_repo_bytes'] / 1e6:,.0f} MB over HTTP vs git archive on disk",
               f"<= {ARCHIVE_RATIO_TARGET}x", f"{ratio:.2f}x", ratio <= ARCHIVE_RATIO_TARGET),
        Target("server memory growth while streaming the archive", "flat (reported)",
               f"{growth_mb:+.1f} MB", None),
    ]


def render(results: dict[str, Any]) -> str:
    cj, cd = results["compare_json"], results["compare_diff"]
    growth_mb = (results["rss_peak_kib"] - results["rss_before_kib"]) / 1024
    return f"""Compare: a parent of {results['files']} text files, forked over HTTP; the fork has one
commit changing {results['changed']} of them. `GET .../repos/agent/compare/parent:main...main`,
{results['calls']} calls after 5 warm-up calls, one server worker, SQLite. Archive: a repo of
{results['archive_repo_bytes'] / 1e6:,.1f} MB of random blobs in one pack; `GET .../archive/main.zip`
streamed by one client against `git archive --format=zip` of the same commit to /dev/null.
`python -m bench.reads`.

| measurement | p50 (ms) | p99 (ms) |
|---|---|---|
| compare, JSON ({results['changed']} files) | {cj['p50_ms']:.1f} | {cj['p99_ms']:.1f} |
| compare, `text/x-diff` ({results['patch_bytes'] / 1e3:,.1f} kB) | {cd['p50_ms']:.1f} | {cd['p99_ms']:.1f} |

| archive | seconds | MB/s |
|---|---|---|
| `git archive --format=zip` on disk | {results['git_archive_s']:.2f} | {results['archive_bytes'] / 1e6 / results['git_archive_s']:,.0f} |
| `GET .../archive/main.zip` | {results['http_archive_s']:.2f} | {results['archive_bytes'] / 1e6 / results['http_archive_s']:,.0f} |

HTTP/disk ratio: {results['ratio']:.2f} (target <= {ARCHIVE_RATIO_TARGET}). Server resident memory
before the archive {results['rss_before_kib'] / 1024:,.1f} MB, peak while streaming
{results['rss_peak_kib'] / 1024:,.1f} MB ({growth_mb:+.1f} MB for a
{results['archive_bytes'] / 1e6:,.0f} MB archive): the bytes pass through one 64 KiB read at a
time and git waits when the client does. A compare is five git processes (merge-base, two
rev-lists, cat-file for the commits, diff --raw --numstat), so its time is mostly process
starts. Noise: 2 shared cores.
"""


if __name__ == "__main__":
    bench_main("Read helpers", run, render, __doc__)
