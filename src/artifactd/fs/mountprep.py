"""A mount's first work that needs neither FUSE nor trio, started before they are imported.

Importing ``pyfuse3`` (and with it ``trio``, ``ssl``, ``importlib.metadata``) costs about
0.1 s of CPU, as much as reading the clone and asking the remote what it supports. So a
mount process starts that reading (three git commands) and the remote's answers (the
credential cache, the advertised capabilities, the inherited hot set) on threads first,
imports the FUSE side while they run, and takes their results when it needs them.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from artifactd.fs import credentials, hotset, objectinfo
from artifactd.fs.gitcmd import run_git
from artifactd.fs.state import RepoConfig, RootState
from artifactd.fs.tree import Entry, list_tree_args, parse_tree
from artifactd.fs.wire import Remote
from artifactd.fs.write.options import PENDING


@dataclass
class CloneRead:
    commit: str
    commit_time: int
    entries: list[Entry]
    local: set[str]  # blobs the clone has


@dataclass
class RemoteFacts:
    auth: tuple[str, str] | None
    remote: Remote  # connected: kept for the first read's lane
    has_object_info: bool
    hot_set: list[bytes]  # inherited from the remote (hotset.py)
    error: str  # why the remote could not be asked: the mount fails with it if it needs it


def local_blobs_args(git_dir: Path) -> list[str]:
    return ["--git-dir", str(git_dir), "cat-file", "--batch-all-objects",
            "--batch-check=%(objectname) %(objecttype)"]


def local_blobs(git_dir: Path) -> set[str]:
    return parse_local_blobs(run_git(local_blobs_args(git_dir)))


def parse_local_blobs(out: bytes) -> set[str]:
    return {line.split()[0] for line in out.decode().splitlines() if line.endswith(" blob")}


def read_clone(git_dir: Path, branch: str) -> CloneRead:
    """The branch's commit and its time, its tree and the blobs the clone has: three git
    commands at once (each mostly a process start-up), not one after another."""
    ref = f"refs/heads/{branch}^{{commit}}"
    commands = [["--git-dir", str(git_dir), "log", "-1", "--format=%H %ct", "--end-of-options", ref, "--"],
                list_tree_args(git_dir, ref), local_blobs_args(git_dir)]
    with ThreadPoolExecutor(len(commands)) as pool:
        head, tree, local = (job.result() for job in [pool.submit(run_git, args) for args in commands])
    commit, commit_time = head.decode().split()
    return CloneRead(commit, int(commit_time), parse_tree(tree), parse_local_blobs(local))


def ask_remote(state: RootState, config: RepoConfig) -> RemoteFacts:
    auth = credentials.fill(state.credential_socket, config.remote)
    remote = Remote(config.remote, auth, objectinfo.TIMEOUT)
    try:  # also where a bad token or remote fails the mount, before anything is mounted
        has_object_info = objectinfo.supported(remote)
    except objectinfo.ObjectInfoError as exc:
        return RemoteFacts(auth, remote, False, [], str(exc))
    return RemoteFacts(auth, remote, has_object_info, hotset.load(remote), "")


class Prepared:
    """The clone's reading and the remote's answers, running on threads from ``start`` on."""

    def __init__(self, state: RootState, config: RepoConfig) -> None:
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="mountprep")
        git_dir = state.git_dir(config.name)
        self._clone: Future[CloneRead] = self._pool.submit(read_clone, git_dir, config.branch)
        self._remote: Future[RemoteFacts] = self._pool.submit(ask_remote, state, config)
        self._pool.shutdown(wait=False)  # the threads end with their two jobs

    @classmethod
    def start(cls, state: RootState, config: RepoConfig) -> Prepared | None:
        """``None`` when a commit's push was interrupted: the mount settles it first (it may
        move the branch), and only then reads the clone."""
        if (state.overlay_dir(config.name) / PENDING).exists():
            return None
        return cls(state, config)

    def wait(self) -> None:
        """Until both are done (before a fork: the child has none of these threads)."""
        self._clone.exception()
        self._remote.exception()

    def clone(self) -> CloneRead:
        return self._clone.result()

    def remote(self) -> RemoteFacts:
        return self._remote.result()
