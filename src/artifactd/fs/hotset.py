"""The learned hot set: the paths agents actually read, kept on the remote, inherited by forks.

Each mount keeps its session's read trace (the files opened for reading, in order) and
appends it to ``run/<name>.trace``. When the session ends, the paths of that trace and of
the hot set the mount started with (most recent first, at most ``MAX_PATHS`` and
``MAX_BYTES`` of blobs) are written to the remote as ``refs/artifact-fs/hotset``: a
parentless commit whose tree holds one file, ``paths``, one path per line. A plain ref, so
any git remote keeps it and artifactd copies it into every fork with the other refs: the
thousandth fork of a baseline starts with the baseline's working set.

At mount time: one ``ls-refs`` for the ref, one fetch of that commit (three small objects),
then the listed paths that exist in the mounted tree are fetched in one batch. So a fork's
first read session costs two fetch requests when its reads stay inside the hot set. Writing
the ref needs a token that may push; with a read-only token the hot set is not updated
(one log line says so) and mounts keep using the one they inherited.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

from artifactd.fs import fetchpack
from artifactd.fs.gitcmd import GitFailed, run_git
from artifactd.fs.wire import Remote, WireError

log = logging.getLogger("artifact_fs")

REF = "refs/artifact-fs/hotset"
LIST_FILE = "paths"
MAX_PATHS = 2000
MAX_BYTES = 16 << 20  # what the server's blob fast path answers in one request
PUSH_TIMEOUT = 30.0


def parse(data: bytes) -> list[bytes]:
    """The paths of a hot-set list: one per line, relative, without ``..`` or empty parts."""
    paths = []
    for line in data.split(b"\n"):
        parts = line.split(b"/")
        if line and not line.startswith(b"/") and all(p and p not in (b".", b"..") for p in parts):
            paths.append(line)
    return paths[:MAX_PATHS]


def load(remote: Remote) -> list[bytes]:
    """The remote's hot set (empty when it has none or cannot say): two requests."""
    try:
        oid = fetchpack.ls_ref(remote, REF)
        if oid is None:
            return []
        blobs = fetchpack.fetch(remote, [oid], filtered=False)
    except (fetchpack.PackError, WireError, ValueError, KeyError, IndexError) as exc:
        log.info("no hot set from the remote: %s", exc)
        return []
    return parse(blobs[0]) if len(blobs) == 1 else []


def merge(trace: list[bytes], inherited: list[bytes], sizes: dict[bytes, int]) -> list[bytes]:
    """This session's paths first, then the inherited ones, within the bounds."""
    merged: list[bytes] = []
    total = 0
    for path in dict.fromkeys([*reversed(trace), *inherited]):
        size = sizes.get(path)
        if size is None or total + size > MAX_BYTES:
            continue  # gone from the tree, or past the byte bound
        merged.append(path)
        total += size
        if len(merged) >= MAX_PATHS:
            break
    return merged


def keep_trace(trace_file: Path, trace: list[bytes]) -> None:
    """Append the session's read trace: one JSON line per session."""
    record = {"ended": int(time.time()), "paths": [p.decode(errors="replace") for p in trace]}
    with open(trace_file, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    os.chmod(trace_file, 0o600)


def store(git_dir: Path, paths: list[bytes]) -> bool:
    """Push ``paths`` as the remote's hot set; ``False`` (and a log line) if it refused."""
    data = b"".join(p + b"\n" for p in paths)
    try:
        git = ["--git-dir", str(git_dir)]
        blob = run_git([*git, "hash-object", "-w", "--stdin"], stdin=data).decode().strip()
        tree = run_git(["--git-dir", str(git_dir), "mktree"],
                       stdin=f"100644 blob {blob}\t{LIST_FILE}\n".encode()).decode().strip()
        commit = run_git(["--git-dir", str(git_dir), "commit-tree", tree, "-m", "artifact-fs hot set"],
                         settings=[("user.name", "artifact-fs"), ("user.email", "artifact-fs@localhost")]
                         ).decode().strip()
        run_git(["--git-dir", str(git_dir), "push", "--quiet", "--no-verify", "origin",
                 f"+{commit}:{REF}"], timeout=PUSH_TIMEOUT)
    except (GitFailed, subprocess.TimeoutExpired) as exc:
        log.warning("hot set not stored on the remote (storing it needs a token that may push): %s", exc)
        return False
    return True
