"""Dense small repos and reads that fan out (issue 12, items 2 and 5).

1. **Disk cost.** N repos created through the API, each pushed one small commit with the
   git CLI, then compacted by the server's own maintenance (it looks every 0.2 s; a first
   push makes a repo due). Disk blocks (``du --block-size=1``) and inodes (``find``) per
   repo directory, for pushed repos and for empty ones (made on their first git request),
   and the 256 shard directories ``repos/xx`` a store of 100k repos adds (each measured
   holding its share, 391 entries). Reference: the
   same repo as ``git init --bare`` + the same push (git's defaults), measured alike. The
   same repo directories are then copied onto fresh loop images of ext4 (defaults), ext4
   ``-O inline_data`` and XFS, and measured there. (The first read of a fresh repo is its
   own section, ``bench.first_read``.)
2. **Read fan-out.** ``wrk`` with 64 connections reading one file from each of K repos in
   turn (K = 100; 10,000 in the full form); reference: a naive CGI that starts
   ``git cat-file`` per request (nginx + fcgiwrap), on the same repos, in the same run; and
   the one-repo figure of artifactd.

    python -m bench.dense [--quick]
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import UNLIMITED, Target, free_port, machine, start_server, work_dir
from bench.git_plane import NGINX_CONF, wait_http
from bench.scale import git, git_env, one_commit_work_tree

READERS = 64
CGI = """#!/bin/sh
# A naive content server: one git process per request. PATH_INFO is /<key>.git/<path>.
repo=${PATH_INFO%%.git/*}
file=${PATH_INFO#*.git/}
printf 'Content-Type: application/octet-stream\\r\\n\\r\\n'
exec git --git-dir="$GIT_PROJECT_ROOT$repo.git" cat-file blob "main:$file"
"""
WRK_ROTATE = """
counter = 0
paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
"""


def disk_cost(path: Path) -> tuple[int, int]:
    blocks = subprocess.run(["du", "--block-size=1", "-s", str(path)], capture_output=True,
                            text=True, check=True).stdout.split()[0]
    inodes = subprocess.run(["find", str(path)], capture_output=True, text=True,
                            check=True).stdout.count("\n")
    return int(blocks), inodes


def repo_dir(server: Any, repo_id: str) -> Path:
    return Path(server.data_dir) / "repos" / repo_id[:2] / f"{repo_id}.git"


# Filesystems the pushed repos are copied onto (a loop image each) to measure what they cost
# there: the default ext4 (the reference), ext4 with inline_data (small files and directories
# in the inode) and XFS (small directories in the inode).
FILESYSTEMS: dict[str, tuple[str, ...]] = {
    "ext4": ("mkfs.ext4", "-q", "-F", "-b", "4096"),
    "ext4_inline_data": ("mkfs.ext4", "-q", "-F", "-b", "4096", "-I", "256", "-O", "inline_data"),
    "xfs": ("mkfs.xfs", "-q", "-f"),
}


def filesystem_cost(repos: list[Path], work: Path, mkfs: tuple[str, ...]) -> dict[str, int] | None:
    """Bytes of blocks and inodes per repo when the same repo directories are copied (``cp
    -a``) onto a fresh filesystem made by ``mkfs`` on a loop image, and the blocks of one
    ``repos/xx`` shard directory holding 100k repos' share; ``None`` where a loop mount is not possible
    (not root, no such ``mkfs``, no loop device)."""
    image, mount = work / "fs.img", work / "fs"
    mount.mkdir(exist_ok=True)
    try:
        subprocess.run(["truncate", "-s", "512M", str(image)], check=True)
        subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        image.unlink(missing_ok=True)
        return None
    try:
        costs = []
        for i, repo in enumerate(repos):
            dest = mount / f"r{i}.git"
            subprocess.run(["cp", "-a", str(repo), str(dest)], check=True)
            costs.append(disk_cost(dest))
        return {"blocks": round(statistics.mean(b for b, _ in costs)),
                "inodes": round(statistics.mean(i for _, i in costs), 1),
                "dir_blocks": shard_dir_blocks(mount / "xx")}
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        image.unlink(missing_ok=True)


SHARDS = 256  # repos/<id[0:2]>/ (storage/repostore.py)
SHARE_100K = -(-100_000 // SHARDS)  # entries of one shard directory at 100k repos


def shard_dir_blocks(shard: Path) -> int:
    """Bytes of blocks of a shard directory holding ``SHARE_100K`` repo entries (the
    directory's own blocks: the entries are empty files here, their cost is the repos')."""
    shard.mkdir(parents=True)
    for i in range(SHARE_100K):
        (shard / f"{i:032x}.git").touch()
    return os.lstat(shard).st_blocks * 512


def open_files(pid: int) -> dict[str, int]:
    """File descriptors the server holds (its process and every descendant: the workers)
    and how many of them are pack files, from ``/proc``; the pack count divided by the repos
    read tells what one open repo costs in descriptors."""
    pids, found = [pid], {"fds": 0, "pack_fds": 0}
    while pids:
        current = pids.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
            for fd in Path(f"/proc/{current}/fd").iterdir():
                found["fds"] += 1
                try:
                    if fd.readlink().suffix in (".pack", ".idx"):
                        found["pack_fds"] += 1
                except OSError:
                    continue
        except OSError:
            continue
    return found


def wait_compacted(path: Path, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (path / "packed-refs").is_file() and not (path / "refs" / "heads").exists():
            return True
        time.sleep(0.05)
    return False


def wrk(urls_file: Path, base: str, token: str | None, seconds: int) -> dict[str, float]:
    script = urls_file.with_suffix(".lua")
    script.write_text(WRK_ROTATE % urls_file)
    argv = ["wrk", "-t2", f"-c{READERS}", f"-d{seconds}s", "--latency", "-s", str(script)]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*argv, base], capture_output=True, text=True, check=True).stdout
    import re

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    factor = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {"rps": round(rps, 1), "non_2xx": int(errors.group(1)) if errors else 0,
            "p99_ms": round(float(p99.group(1)) * factor[p99.group(2)], 2) if p99 else float("nan")}


def combined(runs: list[dict[str, float]]) -> dict[str, float]:
    """Several wrk runs as one: mean requests/s, the worst p99, every non-2xx."""
    return {"rps": round(statistics.mean(r["rps"] for r in runs), 1),
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "p99_ms": max(r["p99_ms"] for r in runs), "runs": len(runs)}


def serve_cgi(base: Path, repos: dict[str, Path]) -> tuple[str, Any]:
    """nginx + fcgiwrap running ``CGI`` for ``/git/<key>.git/<path>``."""
    root, state = base / "cgi-root", base / "cgi-nginx"
    root.mkdir(parents=True)
    state.mkdir(parents=True)
    for key, path in repos.items():
        (root / f"{key}.git").symlink_to(path)
    script = state / "cat-file.cgi"
    script.write_text(CGI)
    script.chmod(0o755)
    port = free_port()
    (state / "nginx.conf").write_text(NGINX_CONF.format(dir=state, port=port, root=root,
                                                        backend=script))
    fcgi = subprocess.Popen(["fcgiwrap", "-c", str(READERS), "-s", f"unix:{state}/fcgiwrap.sock"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    for _ in range(100):
        if (state / "fcgiwrap.sock").exists():
            break
        time.sleep(0.05)
    nginx = subprocess.Popen(["nginx", "-c", str(state / "nginx.conf"), "-p", str(state)],
                             stdout=subprocess.DEVNULL, start_new_session=True)
    wait_http(f"http://127.0.0.1:{port}/")

    def stop() -> None:
        import os
        import signal

        for proc in (nginx, fcgi):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(10)

    return f"http://127.0.0.1:{port}", stop


DEPLOYMENT_OPEN_FILES = 65536  # deploy/artifactd.service's LimitNOFILE


def deployment_open_file_limit() -> int:
    """The open-file limit the server runs under, raised (where this process may) to the
    deployment unit's, as an operator's service gets it: the content reader keeps as many
    repos open as the limit leaves room for (``services.descriptors``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < DEPLOYMENT_OPEN_FILES:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, DEPLOYMENT_OPEN_FILES))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def run(quick: bool = False, pushed: int | None = None,
        fan_out: list[int] | None = None) -> dict[str, Any]:
    """Full form: 1,000 pushed repos, fan-out over 100 and 10,000 repos; ``--quick``: 20
    and 100. ``pushed``/``fan_out`` pick sizes in between (``--pushed N``)."""
    work = work_dir("dense-")
    open_file_limit = deployment_open_file_limit()
    server = start_server(work / "data", extra_env={**UNLIMITED,
                                                    "ARTIFACTD_MAINTENANCE_INTERVAL": "0.2"})
    env = git_env(work / "home")
    pushed = pushed or (20 if quick else 1000)
    fan_out = fan_out or ([100] if quick else [100, 10_000])
    try:
        seed_work = one_commit_work_tree(work / "seed", env, {
            "README.md": "# an agent's repo\n", "notes.txt": "one small commit\n"})
        repos: list[dict[str, Any]] = []
        with server.client() as c:
            for i in range(pushed):
                repos.append(c.post("/repos", json={"name": f"d{i}"}).json()["result"])
            empty = [c.post("/repos", json={"name": f"e{i}"}).json()["result"] for i in range(pushed)]
        for repo in repos:
            git(env, "-c", f"http.extraHeader=Authorization: Bearer {repo['token']}", "push", "-q",
                repo["remote"], "main", cwd=seed_work)
        compacted = sum(wait_compacted(repo_dir(server, r["id"])) for r in repos)
        costs = [disk_cost(repo_dir(server, r["id"])) for r in repos]
        # Empty repos: their directory appears on the first git request (here ls-remote).
        for repo in empty:
            git(env, "-c", f"http.extraHeader=Authorization: Bearer {repo['token']}", "ls-remote",
                repo["remote"])
        empty_costs = [disk_cost(repo_dir(server, r["id"])) for r in empty]
        sample = [repo_dir(server, r["id"]) for r in repos[:200]]
        filesystems = {name: filesystem_cost(sample, work, mkfs) for name, mkfs in FILESYSTEMS.items()}
        reference = work / "reference.git"
        git(env, "init", "-q", "--bare", str(reference))
        git(env, "push", "-q", str(reference), "main", cwd=seed_work)
        ref_blocks, ref_inodes = disk_cost(reference)

        fan: dict[str, Any] = {}
        # Each figure is the mean of short wrk runs taken in turn (K repos, the CGI on the
        # same K, one repo), so that the shared machine's load swings hit all three alike.
        rounds, seconds = (1, 3) if quick else (3, 4)
        one = work / "paths-1.txt"
        one.write_text(f"{server.ns_url().removeprefix(server.url)}/repos/d0/raw/main/notes.txt\n")
        one_runs: list[dict[str, float]] = []
        for count in fan_out:
            targets = [*repos]
            with server.client() as c:
                while len(targets) < count:  # more repos: copies of pushed ones' objects
                    made = c.post("/repos", json={"name": f"f{len(targets)}"}).json()["result"]
                    dest = repo_dir(server, made["id"])
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    subprocess.run(["cp", "-a", str(repo_dir(server, repos[0]["id"])), str(dest)],
                                   check=True)
                    targets.append(made)
            targets = targets[:count]
            listing = work / f"paths-{count}.txt"
            ns = server.ns_url().removeprefix(server.url)
            listing.write_text("".join(f"{ns}/repos/{t['name']}/raw/main/notes.txt\n" for t in targets))
            cgi_list = work / f"cgi-{count}.txt"
            cgi_list.write_text("".join(f"/git/{t['id']}.git/notes.txt\n" for t in targets))
            cgi_url, stop = serve_cgi(work / f"cgi-{count}", {t["id"]: repo_dir(server, t["id"])
                                                               for t in targets})
            runs: dict[str, list[dict[str, float]]] = {"artifactd": [], "cgi": [], "one_repo": []}
            try:
                assert httpx.get(f"{cgi_url}/git/{targets[0]['id']}.git/notes.txt").content \
                    == b"one small commit\n"
                for _ in range(rounds):
                    runs["artifactd"].append(wrk(listing, server.url, server.token, seconds))
                    runs["cgi"].append(wrk(cgi_list, cgi_url, None, seconds))
                    runs["one_repo"].append(wrk(one, server.url, server.token, seconds))
            finally:
                stop()
            assert server.process is not None
            fan[str(count)] = {name: combined(found) for name, found in runs.items()}
            fan[str(count)]["artifactd"].update(open_files(server.process.pid))
            one_runs += runs["one_repo"]
        one_repo = combined(one_runs)

        return {
            "machine": machine(),
            "pushed": pushed, "compacted": compacted,
            "blocks_per_repo": round(statistics.mean(b for b, _ in costs)),
            "inodes_per_repo": round(statistics.mean(i for _, i in costs), 1),
            "empty_blocks_per_repo": round(statistics.mean(b for b, _ in empty_costs)),
            "empty_inodes_per_repo": round(statistics.mean(i for _, i in empty_costs), 1),
            "reference_blocks": ref_blocks, "reference_inodes": ref_inodes,
            "filesystems": filesystems,
            "shard_dirs_100k": SHARDS,
            "shard_dir_blocks": shard_dir_blocks(work / "shard"),
            "fan_out": fan, "one_repo": one_repo, "open_file_limit": open_file_limit,
        }
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def total_100k_gb(results: dict[str, Any], filesystem: str | None = None) -> float:
    """100,000 pushed repos: the per-repo cost x 100,000 plus the 256 ``repos/xx`` shard
    directories such a store has, on the data directory's own filesystem or a measured one."""
    if filesystem is None:
        blocks, dir_blocks = results["blocks_per_repo"], results["shard_dir_blocks"]
    else:
        cost = results["filesystems"][filesystem]
        blocks, dir_blocks = cost["blocks"], cost["dir_blocks"]
    return round((blocks * 100_000 + results["shard_dirs_100k"] * dir_blocks) / 1e9, 3)


def targets(results: dict[str, Any]) -> list[Target]:
    found = [
        Target("disk of a repo with one small commit (blocks, inodes), data dir's ext4",
               "<= 24 KB, <= 10 inodes",
               f"{results['blocks_per_repo'] / 1024:.0f} KiB, {results['inodes_per_repo']} "
               f"(git init --bare: {results['reference_blocks'] / 1024:.0f} KiB, "
               f"{results['reference_inodes']})",
               results["blocks_per_repo"] <= 24 << 10 and results["inodes_per_repo"] <= 10),
        Target("100k repos with one small commit, data dir's ext4", "< 2.5 GB",
               f"{total_100k_gb(results)} GB", total_100k_gb(results) < 2.5),
    ]
    for name, cost in results["filesystems"].items():
        if cost is None:
            found.append(Target(f"repo with one small commit on {FS_LABELS[name]}",
                                "<= 24 KB, 100k < 2.5 GB", "not measured (no loop mount)", None))
            continue
        total = total_100k_gb(results, name)
        found.append(Target(f"repo with one small commit on {FS_LABELS[name]} (per repo; 100k)",
                            "<= 24 KB, <= 10 inodes; 100k < 2.5 GB",
                            f"{cost['blocks'] / 1024:.1f} KiB, {cost['inodes']}; {total} GB",
                            cost["blocks"] <= 24 << 10 and cost["inodes"] <= 10 and total < 2.5))
    for count, fan in results["fan_out"].items():
        ratio = fan["artifactd"]["rps"] / max(fan["cgi"]["rps"], 0.1)
        vs_one = fan["artifactd"]["rps"] / max(fan.get("one_repo", results["one_repo"])["rps"], 0.1)
        found.append(Target(f"read fan-out over {int(count):,} repos, {READERS} clients, vs CGI cat-file",
                            ">= 2x CGI, >= 0.5x one repo",
                            f"{ratio:.2f}x CGI, {vs_one:.2f}x one repo", ratio >= 2 and vs_one >= 0.5))
    return found


FS_LABELS = {"ext4": "ext4 (defaults, loop image)", "ext4_inline_data": "ext4 `-O inline_data`",
             "xfs": "XFS (defaults)"}


def _filesystem_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, cost in results["filesystems"].items():
        if cost is None:
            rows.append(f"| the same repos on {FS_LABELS[name]} | not measured (needs root, "
                        "its mkfs and a loop device) | | |")
        else:
            rows.append(f"| the same repos on {FS_LABELS[name]} (copied) | {cost['blocks'] / 1024:.1f} "
                        f"KiB | {cost['inodes']} | {total_100k_gb(results, name)} GB |")
    return rows


def render(results: dict[str, Any]) -> str:
    lines = [
        f"Command: `python -m bench.dense`. Machine: {results['machine']}.",
        "",
        f"**Disk cost** of {results['pushed']} repos, each created through the API and pushed one "
        f"small commit (2 files) with the git CLI, compacted by the server's maintenance "
        f"({results['compacted']} of {results['pushed']} within the wait), measured per repo "
        "directory with `du --block-size=1 -s` and `find | wc -l` (ext4, 4 KiB blocks):",
        "",
        "| repo | disk blocks | inodes | 100k such repos |",
        "|---|---|---|---|",
        f"| artifactd, one small commit | **{results['blocks_per_repo'] / 1024:.0f} KiB** | "
        f"**{results['inodes_per_repo']}** | {total_100k_gb(results)} GB |",
        f"| artifactd, empty (after its first git request) | {results['empty_blocks_per_repo'] / 1024:.0f} KiB"
        f" | {results['empty_inodes_per_repo']} | |",
        f"| `git init --bare` + the same push (reference) | {results['reference_blocks'] / 1024:.0f} KiB | "
        f"{results['reference_inodes']} | |",
        *_filesystem_rows(results),
        "",
        "100k repos: the per-repo cost x 100,000 plus the "
        f"{results['shard_dirs_100k']} `repos/xx` shard directories such a store has (each "
        f"measured holding its share of 100k entries: {results['shard_dir_blocks'] / 1024:.0f} "
        "KiB on the data dir). A pushed repo holds what git needs and nothing else, in the "
        "dense layout (`storage/repostore.py`, `DENSE_LINKS`): `objects` and `objects/pack` "
        "are the symlinks `objects -> .` and `pack -> .`, so git's object store is the repo "
        "directory itself, and the repo is two directories (the repo, `refs`), four small "
        "files (`HEAD`, the pack, its index, `packed-refs`), the two links (a symlink with a "
        "target under 60 bytes is kept in its inode on ext4: no block; the push lock is a "
        "`flock` on the repo directory, no file): 6 blocks and 8 inodes on ext4 with its "
        "defaults (no `config`, "
        "`description`, `hooks/`, `info/`, loose objects or fan-out directories: every push "
        "is kept as one pack and the first maintenance packs the refs). `HEAD` stays a file: "
        "a symlink `HEAD -> refs/heads/<branch>` would save a seventh block and git reads it, "
        "but libgit2 (the in-process reads) takes a repo whose `HEAD` link dangles, as it does "
        "once maintenance packed the branch into `packed-refs`, for no repository. Repos made "
        "before the dense layout keep theirs (and their two-level `repos/xx/yy` path) and "
        "work as before. XFS and ext4 `-O inline_data` keep small directories (and, for "
        "inline_data, small files) in the inode; the rows above are the same repo "
        "directories copied (`cp -a`, links kept) onto a fresh loop image of each.",
        "",
        f"**Read fan-out**: `wrk`, 2 threads, {READERS} connections, one small file from each of "
        "K repos in turn; reference: nginx + fcgiwrap starting `git cat-file` per request, same "
        "repos, same run. Each figure is the mean of short `wrk` runs taken in turn (K repos, "
        "the CGI on the same K, one repo), so that the machine's load swings hit all three alike.",
        "",
        "| repos | artifactd req/s | p99 (ms) | CGI cat-file req/s | p99 (ms) | ratio | vs one repo "
        "| server fds after (pack files) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count, fan in results["fan_out"].items():
        ours, cgi = fan["artifactd"], fan["cgi"]
        one = fan.get("one_repo", results["one_repo"])["rps"]
        lines.append(f"| {int(count):,} | {ours['rps']} | {ours['p99_ms']} | {cgi['rps']} | "
                     f"{cgi['p99_ms']} | {ours['rps'] / max(cgi['rps'], 0.1):.2f}x | "
                     f"{ours['rps'] / max(one, 0.1):.2f}x | {ours.get('fds', '?')} "
                     f"({ours.get('pack_fds', '?')}) |")
    lines += ["", f"One repo, same load: {results['one_repo']['rps']} req/s (p99 "
              f"{results['one_repo']['p99_ms']} ms; \"vs one repo\" divides by the one-repo runs "
              "taken in turn with each row's). "
              "Targets: at least 2x the CGI and 0.5x the one-repo figure. Reads are in "
              "process (libgit2), with an LRU of at most `content_reader_max_repos` (16,384) "
              "open repositories per worker, fitted to the open-file limit (the server ran "
              f"under a hard limit of {results.get('open_file_limit', 'n/a')}, "
              "deploy/artifactd.service's `LimitNOFILE=65536` where the benchmark may raise "
              "it): past that, a read of a repo not open costs an open (its pack index read, "
              "no process). The last column counts the descriptors of "
              "the server and its workers right after the run, and of those the pack and index "
              "files the open repositories hold."]
    return "\n".join(lines)


if __name__ == "__main__":
    # python -m bench.dense [--quick] [--pushed N] [--write]: --write rewrites the section.
    sizes = sys.argv[sys.argv.index("--pushed") + 1] if "--pushed" in sys.argv else None
    out = run("--quick" in sys.argv, pushed=int(sizes) if sizes else None,
              fan_out=[100] if sizes else None)
    print(out)
    print(render(out))
    if "--write" in sys.argv:
        from bench.common import write_section

        write_section("Dense small repos and read fan-out", render(out))
