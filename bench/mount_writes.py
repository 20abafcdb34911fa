"""ArtifactFS writes: writing through the mount, ``artifact-fs commit``, and following the
remote, against references in the same run on the same server: the same files written to a
plain directory, and ``git add -A && git commit && git push`` of them in a normal checkout.

    python -m bench.mount_writes [--quick] [--no-write]
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from artifactd.fs.write import control
from bench.common import UNLIMITED, Target, bench_main, start_server, work_dir

IDENTITY = ["-c", "user.name=b", "-c", "user.email=b@example.com"]


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _write_files(folder: Path, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        path = folder / f"new{i % 20:02}" / f"file{i:05}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"line %d\n" % i * 10)
    return time.perf_counter() - started


def _write_large(path: Path, size: int) -> float:
    chunk = os.urandom(1 << 20)
    started = time.perf_counter()
    with open(path, "wb") as out:
        for _ in range(size // len(chunk)):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - started


def timed_command(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def run(quick: bool) -> dict[str, Any]:
    files = 100 if quick else 2000
    large = (16 if quick else 256) << 20
    work = work_dir("mount-writes-")
    server = start_server(work / "data", extra_env=UNLIMITED)
    root = work / "root"
    root.mkdir()
    daemon: subprocess.Popen[bytes] | None = None
    fs = [sys.executable, "-m", "artifactd.fs"]
    try:
        created = server.client().post("/repos", json={"name": "bench"}).json()["result"]
        auth = created["remote"].replace("http://", f"http://x:{created['token'].split('?expires=')[0]}@", 1)
        seed = work / "seed"
        seed.mkdir()
        (seed / "README.md").write_text("bench\n")
        _git("init", "-q", "-b", "main", cwd=seed)
        _git("add", "-A", cwd=seed)
        _git(*IDENTITY, "commit", "-qm", "seed", cwd=seed)
        _git("push", "-q", auth, "main", cwd=seed)
        checkout = work / "checkout"
        _git("clone", "-q", auth, str(checkout))
        subprocess.run([*fs, "add-repo", "--name", "bench", "--remote", auth, "--mount-root", str(root)],
                       check=True, capture_output=True)
        daemon = subprocess.Popen([*fs, "daemon", "--root", str(root), "--poll-interval", "0.5"],
                                  stderr=subprocess.DEVNULL)
        mount = root / "bench"
        while not os.path.ismount(mount):
            time.sleep(0.01)
        plain = work / "plain"
        plain.mkdir()
        write_plain = _write_files(plain, files)
        write_mount = _write_files(mount, files)
        large_plain = _write_large(work / "large.bin", large)
        large_mount = _write_large(mount / "large.bin", large)
        (mount / "large.bin").unlink()
        # The commit itself, as `artifact-fs commit` asks for it (its Python start-up apart).
        started = time.perf_counter()
        answer = control.ask(root / ".artifact-fs" / "run" / "bench.ctl", {"op": "commit", "message": "bench"})
        commit_mount = time.perf_counter() - started
        assert answer["ok"] and answer["committed"], answer
        command_start = timed_command([*fs, "commit", "bench", "-m", "nothing", "--root", str(root)])
        # The reference: the same files committed and pushed from a checkout (to a branch of its own).
        _write_files(checkout, files)
        started = time.perf_counter()
        _git("add", "-A", cwd=checkout)
        _git(*IDENTITY, "commit", "-qm", "bench files", cwd=checkout)
        _git("push", "-q", "origin", "HEAD:refs/heads/reference", cwd=checkout)
        commit_git = time.perf_counter() - started
        # Following the remote: a push from elsewhere, until the clean mount shows it.
        _git("fetch", "-q", "origin", "main", cwd=checkout)
        _git("reset", "-q", "--hard", "origin/main", cwd=checkout)
        (checkout / "README.md").write_text("moved on\n")
        _git(*IDENTITY, "commit", "-qam", "moved", cwd=checkout)
        _git("push", "-q", "origin", "main", cwd=checkout)
        started = time.perf_counter()
        while (mount / "README.md").read_text() != "moved on\n":
            time.sleep(0.01)
        follow = time.perf_counter() - started
        return {"files": files, "large_mib": large >> 20, "write_plain_s": write_plain, "write_mount_s": write_mount,
                "large_plain_s": large_plain, "large_mount_s": large_mount, "commit_mount_s": commit_mount,
                "commit_git_s": commit_git, "command_nothing_s": command_start, "follow_s": follow, "poll_interval_s": 0.5,
                "load_average": os.getloadavg()[0]}
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
        server.stop()
        socket = root / ".artifact-fs" / "run" / "credential-socket"
        if socket.exists():
            subprocess.run(["git", "credential-cache", f"--socket={socket}", "exit"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def targets(results: dict[str, Any]) -> list[Target]:
    r = results
    return [
        Target(f"commit of {r['files']} new files through the mount vs git add+commit+push", "<= 2x",
               f"{r['commit_mount_s'] / r['commit_git_s']:.2f}x", r["commit_mount_s"] <= 2 * r["commit_git_s"]),
        Target(f"writing {r['files']} small files through the mount vs a plain directory", "reported",
               f"{r['write_mount_s'] / r['write_plain_s']:.1f}x", None),
        Target(f"writing {r['large_mib']} MiB through the mount vs a plain directory", "reported",
               f"{r['large_mount_s'] / r['large_plain_s']:.1f}x", None),
    ]


def render(results: dict[str, Any]) -> str:
    r = results
    rows = "\n".join(f"| {t.what} | {t.goal} | {t.measured} | "
                     f"{'reported' if t.met is None else 'met' if t.met else '**missed**'} |"
                     for t in targets(results))
    mib = r["large_mib"]
    return f"""One artifactd (SQLite) on loopback, on a 2-core machine shared with other work (load
average {r['load_average']:.0f} at the end of the run). `python -m bench.mount_writes`.
{r['files']} small files in 20 new directories written through a mount, then `artifact-fs commit`;
the reference commits and pushes the same files from a normal checkout (`git add -A`, `git
commit`, `git push`) in the same run.

| measurement | target | measured | verdict |
|---|---|---|---|
{rows}

Figures (s): {r['files']} files written through the mount {r['write_mount_s']:.2f} (plain directory
{r['write_plain_s']:.2f}); {mib} MiB written and fsynced through the mount {r['large_mount_s']:.2f}
({mib / r['large_mount_s']:.0f} MiB/s; plain directory {r['large_plain_s']:.2f}); `artifact-fs commit`
{r['commit_mount_s']:.2f} as asked over the control socket (git add+commit+push {r['commit_git_s']:.2f}),
plus the command's own start-up: `artifact-fs commit` with nothing to commit takes
{r['command_nothing_s']:.2f} (a Python start-up importing the `artifactd` package); a push from elsewhere shown by the clean mount after {r['follow_s']:.2f}
(poll interval {r['poll_interval_s']} s).
"""


def main() -> None:
    bench_main("ArtifactFS writes", run, render, __doc__)


if __name__ == "__main__":
    main()
