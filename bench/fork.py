"""Fork benchmark: time and disk of ``POST .../fork`` for a small and a large parent.

Forks hardlink the parent's object files, so their cost should depend on the number of
files (a pack, its index, a few metadata files after maintenance), not on their size. Two
parents with the same shape (one commit of N random blobs, written by one
``git fast-import`` into one pack) differ only in bytes: ~10 MB and ~1 GB (2 MB and 64 MB
with ``--quick``). Each is forked repeatedly over HTTP; the table reports the end-to-end
request time and what the fork adds on disk (bytes in inodes not shared with the parent).

    python -m bench.fork [--quick] [--no-write]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.gitutil import object_files

from bench.common import Target, bench_main, machine, start_server, summary, work_dir

TARGET_MS = 200.0
CHUNK = 1 << 20


def make_parent(git_dir: Path, blobs: int, blob_bytes: int) -> None:
    """A bare repo with one commit of ``blobs`` random files, in one uncompressed pack.

    Random bytes do not compress, so compression is off and big-file streaming is on (no
    delta search): writing 1 GB takes seconds, not minutes.
    """
    env = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "PATH": "/usr/bin:/bin",
           "HOME": str(git_dir.parent)}
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(git_dir)], check=True, env=env)
    proc = subprocess.Popen(
        ["git", "-c", "core.compression=0", "-c", "pack.compression=0", "-c", "core.bigFileThreshold=1m",
         "-c", "fastimport.unpackLimit=0", f"--git-dir={git_dir}", "fast-import", "--quiet"],
        stdin=subprocess.PIPE, env=env,
    )
    assert proc.stdin is not None
    for i in range(blobs):
        proc.stdin.write(f"blob\nmark :{i + 1}\ndata {blob_bytes}\n".encode())
        left = blob_bytes
        while left:
            step = min(CHUNK, left)
            proc.stdin.write(os.urandom(step))
            left -= step
        proc.stdin.write(b"\n")
    message = b"random blobs"
    proc.stdin.write(b"commit refs/heads/main\ncommitter Bench <bench@example.com> 1700000000 +0000\n")
    proc.stdin.write(b"data %d\n%s\n" % (len(message), message))
    for i in range(blobs):
        proc.stdin.write(f"M 100644 :{i + 1} blob-{i:03d}.bin\n".encode())
    proc.stdin.write(b"\n")
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")


def _unique_bytes(fork_dir: Path, parent_dir: Path) -> int:
    parent_inodes = {p.stat().st_ino for p in object_files(parent_dir)}
    return sum(p.stat().st_size for p in object_files(fork_dir) if p.stat().st_ino not in parent_inodes)


def run(quick: bool = False) -> dict[str, Any]:
    base = work_dir("fork-")
    server = start_server(base / "data")
    shapes = [("2 MB", 8, 256 << 10), ("64 MB", 16, 4 << 20)] if quick else \
        [("10 MB", 10, 1 << 20), ("1 GB", 16, 64 << 20)]
    forks_each = 5 if quick else 15
    results: list[dict[str, Any]] = []
    try:
        with server.client() as c:
            for label, blobs, blob_bytes in shapes:
                name = f"parent-{label.replace(' ', '').lower()}"
                parent_id = c.post("/repos", json={"name": name}).json()["result"]["id"]
                parent_dir = server.data_dir / "repos" / parent_id[:2] / f"{parent_id}.git"
                parent_dir.parent.mkdir(parents=True, exist_ok=True)
                started = time.perf_counter()
                make_parent(parent_dir, blobs, blob_bytes)
                generate_s = time.perf_counter() - started
                parent_bytes = sum(p.stat().st_size for p in object_files(parent_dir))
                c.post(f"/repos/{name}/fork", json={"name": f"{name}-warmup"})  # first-request costs
                samples = []
                objects = 0
                for i in range(forks_each):
                    started = time.perf_counter()
                    r = c.post(f"/repos/{name}/fork", json={"name": f"{name}-fork-{i}"})
                    samples.append(time.perf_counter() - started)
                    assert r.status_code == 200, r.text
                    objects = r.json()["result"]["objects"]
                fork_id = r.json()["result"]["id"]
                fork_dir = server.data_dir / "repos" / fork_id[:2] / f"{fork_id}.git"
                results.append({
                    "parent": label,
                    "parent_bytes": parent_bytes,
                    "parent_object_files": len(object_files(parent_dir)),
                    "generate_s": round(generate_s, 1),
                    "objects": objects,
                    "fork": summary(samples),
                    "fork_unique_bytes": _unique_bytes(fork_dir, parent_dir),
                })
                # Check the fork is whole: fsck reads every object through the links.
                if not quick:
                    subprocess.run(["git", f"--git-dir={fork_dir}", "fsck", "--connectivity-only", "--no-progress"],
                                   check=True)
        return {"machine": machine(), "forks_each": forks_each, "results": results,
                "target_ms": TARGET_MS}
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def targets(results: dict[str, Any]) -> list[Target]:
    out = [Target(f"fork p50, {r['parent']} parent", f"< {TARGET_MS:g} ms", f"{r['fork']['p50_ms']:.1f} ms",
                  r["fork"]["p50_ms"] < TARGET_MS) for r in results["results"]]
    bytes_added = max(r["fork_unique_bytes"] for r in results["results"])
    out.append(Target("object bytes a fork adds", "0 (no copies)", f"{bytes_added}", bytes_added == 0))
    return out


def render(results: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {r['parent']} ({r['parent_bytes'] / 1e6:,.1f} MB in {r['parent_object_files']} files) "
        f"| {r['objects']} | {r['fork']['p50_ms']:.1f} | {r['fork']['p99_ms']:.1f} "
        f"| {r['fork_unique_bytes'] / 1e3:,.1f} kB |"
        for r in results["results"]
    )
    p50s = [r["fork"]["p50_ms"] for r in results["results"]]
    ok = all(p < TARGET_MS for p in p50s)
    ratio = max(p50s) / min(p50s) if min(p50s) > 0 else float("nan")
    return f"""`POST .../repos/:name/fork` over HTTP, {results['forks_each']} forks of each parent after
one warm-up fork, one server worker, SQLite. Both parents have the same shape (one commit of
random blobs in one pack, written by `git fast-import`); only their size differs.
`python -m bench.fork`.

| parent | objects | fork p50 (ms) | fork p99 (ms) | object bytes added by the fork |
|---|---|---|---|---|
{rows}

Large/small p50 ratio: {ratio:.2f}. Target: both under {TARGET_MS:g} ms and about equal:
**{'met' if ok and ratio < 2 else 'NOT met'}**.

A fork hardlinks the parent's object files (O(number of files), never O(bytes)), writes
`packed-refs`, `HEAD` and `config`, renames the directory into place and inserts its row;
"object bytes added" counts bytes under the fork's `objects/` in inodes the parent does not
share (zero: every object file is a link); the fork's own files (`packed-refs`, `HEAD`,
`config`) are a few hundred bytes. The request time is mostly the REST path (API token check,
name check, the row and its first token); the snapshot of the parent's refs is read in
process by libgit2 (`RepoStore.ref_list`, about 0.3 ms; a `git for-each-ref` process for it
took 2.3 ms until 2026-12-03).
Noise: 2 shared cores; runs vary by about ±20%, the max by more.
"""


if __name__ == "__main__":
    bench_main("Fork", run, render, __doc__)
