"""``artifact-fs commit``: the overlay as a commit on the mount's branch, pushed with a
compare-and-swap on the head the mount shows.

C git does the work: ``hash-object -w --stdin-paths`` writes the overlay's files as blobs
(git streams them from disk), a private index file starts from the base tree
(``read-tree``), takes the overlay's changes (``update-index --index-info``) and becomes a
tree (``write-tree --missing-ok``: unchanged blobs are not in a blobless clone, and need not
be), and ``commit-tree`` makes the commit. ``push --force-with-lease=<branch>:<base>``
lands it only if the remote branch is still at the base; otherwise the commit is pushed to
a side branch and the overlay is kept. ``--no-thin`` keeps pack-objects from reading base
blobs as delta bases (they are not local).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from artifactd.fs.children import die_with_parent
from artifactd.fs.gitcmd import GIT, GitFailed, config_env, git_env
from artifactd.fs.write.overlay import DIR, GONE, Change, Overlay

ZERO = "0" * 40
PUSH_TIMEOUT = 300.0
MOVED = ("(stale info)", "(fetch first)", "(non-fast-forward)")  # push's reasons: the branch moved
# Blobs above this are streamed by git (hash-object into a pack, pack-objects without
# deltas) instead of read whole into memory: a large file written in the mount stays cheap.
STREAM = (("core.bigFileThreshold", "16m"),)
DEFAULT_IDENTITY = (("user.name", "artifact-fs"), ("user.email", "artifact-fs@localhost"))


class CommitFailed(RuntimeError):
    """The commit did not land; the message says why and what to do. The overlay is kept."""


@dataclass(frozen=True)
class Built:
    commit: str
    blobs: dict[str, int]  # new blob -> size


@dataclass(frozen=True)
class Pushed:
    commit: str
    side_branch: str  # empty when the branch itself moved to ``commit``
    remote_head: str  # where the branch is on the remote


def _git(git_dir: Path, *args: str, stdin: bytes | None = None, env_index: Path | None = None,
         settings: tuple[tuple[str, str], ...] = (), timeout: float = 600) -> bytes:
    """git's stdout; on failure ``GitFailed`` with its stdout and stderr (a push's porcelain
    lines say why a ref was rejected)."""
    env = git_env(config_env(settings))
    if env_index is not None:
        env["GIT_INDEX_FILE"] = str(env_index)
    try:
        result = subprocess.run([GIT, "--git-dir", str(git_dir), *args], input=stdin, capture_output=True,
                                timeout=timeout, env=env, check=False,
                                preexec_fn=die_with_parent())
    except subprocess.TimeoutExpired:
        raise GitFailed(f"git {args[0]} timed out after {timeout:.0f} s") from None
    if result.returncode != 0:
        text = (result.stdout + result.stderr).decode(errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        raise GitFailed(" / ".join(lines[-4:]) or f"git {args[0]} failed ({result.returncode})")
    return result.stdout


def build(git_dir: Path, overlay: Overlay, changes: dict[bytes, Change], base: str,
          message: str) -> Built | None:
    """The commit of ``changes`` on ``base``; ``None`` when its tree is the base's."""
    own = [(path, change) for path, change in changes.items() if change.data]
    blobs: dict[str, int] = {}
    oids: dict[bytes, str] = {}
    if own:
        files = [str(overlay.data_path(change.data)) for _, change in own]
        sizes = [os.stat(f).st_size for f in files]
        out = _git(git_dir, "hash-object", "-w", "--no-filters", "--stdin-paths", settings=STREAM,
                   stdin="".join(f"{f}\n" for f in files).encode()).decode().split()
        for (path, _), oid, size in zip(own, out, sizes, strict=True):
            oids[path] = oid
            blobs[oid] = size
    lines = bytearray()
    for path, change in changes.items():
        if change.kind == DIR:
            continue  # git keeps no directories: one with files shows through its files
        if change.kind == GONE:
            lines += f"0 {ZERO}\t".encode() + path + b"\0"
        else:
            lines += f"{change.git_mode} {oids.get(path, change.oid)}\t".encode() + path + b"\0"
    index = overlay.folder / "commit.index"
    index.unlink(missing_ok=True)
    try:
        _git(git_dir, "read-tree", base, env_index=index)
        if lines:
            _git(git_dir, "update-index", "-z", "--index-info", stdin=bytes(lines), env_index=index)
        tree = _git(git_dir, "write-tree", "--missing-ok", env_index=index).decode().strip()
    finally:
        index.unlink(missing_ok=True)
    base_tree = _git(git_dir, "rev-parse", f"{base}^{{tree}}").decode().strip()
    if tree == base_tree:
        return None
    commit = _git(git_dir, "commit-tree", tree, "-p", base, "-F", "-", stdin=message.encode(),
                  settings=_identity(git_dir)).decode().strip()
    return Built(commit, blobs)


def _identity(git_dir: Path) -> tuple[tuple[str, str], ...]:
    try:
        _git(git_dir, "config", "user.email")
        return ()
    except GitFailed:
        return DEFAULT_IDENTITY


def explain(text: str, remote: str, name: str) -> str:
    if any(s in text for s in ("Authentication failed", "could not read Username", "error: 401",
                               "error: 403")):
        return (f"the remote refused the credentials for {remote}: run artifact-fs add-repo --name {name} "
                "--remote https://x:NEWTOKEN@... again with a token that may write, then commit again")
    if any(s in text for s in ("unable to access", "Could not resolve", "Failed to connect",
                               "Connection refused", "timed out", "Empty reply", "Couldn't connect")):
        return f"cannot reach {remote} ({text}): commit again when it answers"
    return f"the push to {remote} failed: {text}"


def push(git_dir: Path, branch: str, commit: str, expected: str, remote: str, name: str) -> Pushed:
    """Push ``commit`` to ``branch`` if the remote is still at ``expected``, else to a side branch."""
    target = f"refs/heads/{branch}"
    try:
        _git(git_dir, "push", "--porcelain", "--no-thin", "--no-verify",
             f"--force-with-lease={target}:{expected}", "origin", f"{commit}:{target}", timeout=PUSH_TIMEOUT,
             settings=STREAM)
        return Pushed(commit, "", commit)
    except GitFailed as exc:
        if not any(reason in str(exc) for reason in MOVED):
            raise CommitFailed(explain(str(exc), remote, name)) from None
    # The branch moved on the remote: learn where to (blobless), then push to a side branch.
    try:
        _git(git_dir, "fetch", "--quiet", "--no-tags", "--filter=blob:none", "origin",
             f"+{target}:refs/remotes/origin/{branch}", timeout=PUSH_TIMEOUT)
        remote_head = _git(git_dir, "rev-parse", f"refs/remotes/origin/{branch}").decode().strip()
        side = f"artifact-fs/{branch}/{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{commit[:8]}"
        _git(git_dir, "push", "--quiet", "--no-thin", "--no-verify", "origin", f"{commit}:refs/heads/{side}",
             timeout=PUSH_TIMEOUT, settings=STREAM)
    except GitFailed as exc:
        raise CommitFailed(explain(str(exc), remote, name)) from None
    return Pushed(commit, side, remote_head)


def advance(git_dir: Path, branch: str, new: str, old: str) -> None:
    """Move the clone's branch (what ``git log`` in the mount shows) and its tracking ref."""
    _git(git_dir, "update-ref", f"refs/heads/{branch}", new, old)
    _git(git_dir, "update-ref", f"refs/remotes/origin/{branch}", new)
