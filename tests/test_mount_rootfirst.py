"""Root listing first: the root directory read straight from the remote over the git protocol
(``fs/rootfirst.py``: the branch's commit, its root tree by a ``filter tree:1`` fetch, the root
blobs' sizes), from artifactd and from C ``git http-backend``, and a handed-off or one-shot
mount that answers from it while its blobless clone is held back (``fs/rootview.py``)."""

# ruff: noqa: F811 - the mount fixtures (root, fs_env) are test_mount's, imported by name

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactd.fs import fetchpack, rootfirst
from artifactd.fs.wire import Remote
from tests.harness import Server
from tests.test_mount import (  # noqa: F401 - fixtures
    FILES,
    auth_remote,
    cached_blobs,
    fs,
    fs_env,
    git,
    make_repo,
    root,
    start_daemon,
)


def _expected(work: Path) -> tuple[str, list[tuple[str, str, str, bytes]], dict[str, int]]:
    listing = git("-C", str(work), "ls-tree", "-l", "-z", "HEAD").split("\0")
    entries, sizes = [], {}
    for record in filter(None, listing):
        meta, _, name = record.partition("\t")
        mode, kind, oid, size = meta.split()
        entries.append((mode, kind, oid, name.encode()))
        if kind == "blob":
            sizes[oid] = int(size)
    return git("-C", str(work), "rev-parse", "HEAD").strip(), entries, sizes


def _check(remote: Remote, work: Path) -> None:
    read = rootfirst.read_root(remote, "main")
    commit, entries, sizes = _expected(work)
    assert read.commit == commit
    assert [tuple(e) for e in read.entries] == entries
    assert read.sizes == sizes
    assert read.commit_time == int(git("-C", str(work), "log", "-1", "--format=%ct").strip())


def test_root_of_an_artifactd_repo_over_the_git_protocol(
    sqlite_server: Server, unique_name: str, tmp_path: Path
) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, FILES)
    connection = Remote(remote, ("x", token.split("?expires=")[0]), 30)
    try:
        _check(connection, tmp_path / f"src-{unique_name}")
        try:
            rootfirst.read_root(connection, "nope")
        except rootfirst.RootReadError as exc:
            assert "no branch 'nope'" in str(exc)
        else:
            raise AssertionError("a missing branch must fail")
    finally:
        connection.close()


def test_root_from_plain_git_http_backend(tmp_path: Path) -> None:
    from tests.gitsource import GitSource

    source = GitSource(tmp_path / "upstream").start()
    try:
        work = tmp_path / "work"
        for path, data in FILES.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_bytes(data)
        os.symlink("README.md", work / "link")
        git("init", "-q", "-b", "main", cwd=work)
        git("add", "-A", cwd=work)
        git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "plain", cwd=work)
        bare = source.root / "plain.git"
        git("clone", "-q", "--bare", str(work), str(bare))
        git("--git-dir", str(bare), "config", "uploadpack.allowFilter", "true")
        git("--git-dir", str(bare), "config", "transfer.advertiseObjectInfo", "true")
        connection = Remote(f"{source.url}/plain.git", None, 30)
        try:
            _check(connection, work)
        finally:
            connection.close()
    finally:
        source.stop()


def test_the_hot_set_ref_is_the_hot_sets() -> None:
    from artifactd.fs import hotset

    assert rootfirst.HOT_SET_REF == hotset.REF


def test_the_tree_filter_fetch_brings_no_blob() -> None:
    body = rootfirst.request_body("a" * 40)
    assert b"filter tree:1\n" in body and b"want " + b"a" * 40 in body
    assert fetchpack.parse_pack  # the blob-only view of a pack is kept for the reads


def test_a_directory_below_the_root_over_the_git_protocol(
    sqlite_server: Server, unique_name: str, tmp_path: Path
) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, FILES)
    work = tmp_path / f"src-{unique_name}"
    connection = Remote(remote, ("x", token.split("?expires=")[0]), 30)
    try:
        tree = git("-C", str(work), "rev-parse", "HEAD:src").strip()
        entries, sizes = rootfirst.read_tree(connection, tree)
        listing = [line.split() for line in git("-C", str(work), "ls-tree", "-l", "HEAD:src").splitlines()]
        assert [(e.git_mode, e.kind, e.oid, e.path.decode()) for e in entries] == \
            [(m, k, o, n) for m, k, o, _, n in listing]
        assert sizes == {o: int(s) for _, k, o, s, _ in listing if k == "blob"}
    finally:
        connection.close()


class CloneGate:
    """A ``git`` first on PATH whose ``clone`` waits, blocked on a FIFO, until ``release``:
    what a mount shows while its clone has not landed, without timing anything."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        folder.mkdir()
        self.fifo = folder / "gate"
        os.mkfifo(self.fifo)
        shim = folder / "git"
        shim.write_text(f"""#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = clone ]; then cat "{self.fifo}" >/dev/null; break; fi
done
exec "{shutil.which('git')}" "$@"
""")
        shim.chmod(0o755)
        self.env = {**env, "PATH": f"{folder}:{env['PATH']}"}

    def release(self) -> None:
        """Let every clone waiting at the gate go on (nothing to do if none waits)."""
        with contextlib.suppress(OSError):
            os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.fixture
def gate(tmp_path: Path, fs_env: dict[str, str]) -> Iterator[CloneGate]:
    held = CloneGate(tmp_path / "gate", fs_env)
    yield held
    held.release()


def _log(root: Path, name: str) -> str:
    return (root / ".artifact-fs" / "run" / f"{name}.log").read_text()


def _events(root: Path, name: str) -> list[str]:
    return [line.split("root-first: ", 1)[1].split(" ")[0].rstrip(":") for line in _log(root, name).splitlines()
            if "root-first: " in line]


def _check_before_landing(mount: Path, root: Path, name: str) -> None:
    """The root, a directory below it and a read, answered while the clone is held back."""
    assert sorted(os.listdir(mount)) == [".git", "README.md", "bin", "data", "src"]
    assert os.stat(mount / "README.md").st_size == len(FILES["README.md"])
    assert not (root / ".artifact-fs" / "git" / name / ".git" / "index").exists()
    # Below the root: that directory's tree read the same way, the sizes from object-info.
    assert sorted(os.listdir(mount / "src")) == ["app.py", "lib"]
    assert os.stat(mount / "src" / "app.py").st_size == len(FILES["src/app.py"])
    assert os.stat(mount / "src" / "lib" / "util.py").st_size == len(FILES["src/lib/util.py"])
    assert os.stat(mount / "data" / "big.bin").st_size == len(FILES["data/big.bin"])
    assert cached_blobs(root) == []  # metadata fetched no blob bytes
    assert "landed" not in _events(root, name)
    # A read: its blob through the hydrator's batch path.
    assert (mount / "src" / "app.py").read_bytes() == FILES["src/app.py"]
    assert "landed" not in _events(root, name)


def _check_after_landing(mount: Path, root: Path, name: str) -> None:
    before = {p: os.stat(mount / p).st_ino for p in ("README.md", "src", "src/app.py", "src/lib")}
    git_log = git("-C", str(mount), "log", "--oneline", "-5")  # waits for the clone, then its index
    assert "first files" in git_log
    events = _events(root, name)
    assert events.index("mounted") < events.index("cloned") < events.index("landed"), events
    # The inodes the kernel had before the landing are the full tree's.
    assert {p: os.stat(mount / p).st_ino for p in before} == before
    assert os.stat(mount / "bin" / "run.sh").st_size == len(FILES["bin/run.sh"])
    assert git("-C", str(mount), "status", "--porcelain", "--", ".", ":!notes.txt") == ""
    assert (mount / "README.md").read_bytes() == FILES["README.md"]


def test_handed_off_mount_answers_from_its_root_while_the_clone_is_held(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str],
    gate: CloneGate
) -> None:
    first_remote, first_token = make_repo(sqlite_server, f"{unique_name}-a", tmp_path, {"a.txt": b"a\n"})
    added = fs(fs_env, "add-repo", "--name", "first", "--remote", auth_remote(first_remote, first_token),
               "--mount-root", str(root))
    assert added.returncode == 0, added.stderr
    daemon = start_daemon(gate.env, root, "first", landed=False)  # its clone waits at the gate too
    try:
        remote, token = make_repo(sqlite_server, f"{unique_name}-b", tmp_path, FILES)
        # The command's imports listed (PYTHONPROFILEIMPORTTIME): the hand-off loads no click.
        result = fs({**fs_env, "PYTHONPROFILEIMPORTTIME": "1"}, "add-repo", "--name", "second",
                    "--remote", auth_remote(remote, token), "--branch", "main", "--mount-root", str(root))
        assert result.returncode == 0, result.stderr
        assert "(mounted by the running daemon)" in result.stdout
        imported = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines()}
        assert "artifactd.fs.handoff" in imported and "click" not in imported
        mount = root / "second"
        assert os.path.ismount(mount)  # mounted while the clone waits at the gate
        _check_before_landing(mount, root, "second")
        # A write before the landing waits for it (the overlay is the full mount's).
        writer = threading.Thread(target=(mount / "notes.txt").write_bytes, args=(b"early\n",))
        writer.start()
        gate.release()
        writer.join(timeout=60)
        assert not writer.is_alive()
        _check_after_landing(mount, root, "second")
        assert (mount / "notes.txt").read_bytes() == b"early\n"
        assert "notes.txt" in os.listdir(mount)
        assert daemon.poll() is None
    finally:
        gate.release()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    assert not os.path.ismount(root / "second")


def test_guide_flow_add_repo_records_without_cloning_and_the_daemon_mounts_root_first(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str],
    gate: CloneGate
) -> None:
    """The guide's order (add-repo with no daemon, then ``daemon &``, then ``ls``): add-repo
    checks the remote and records the repo but leaves the clone to the mount, and the
    daemon mounts it from its root while the clone runs behind (here: held at the gate)."""
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, FILES)
    added = fs(fs_env, "add-repo", "--name", "starter-repo", "--remote", auth_remote(remote, token),
               "--branch", "main", "--mount-root", str(root))
    assert added.returncode == 0, added.stderr
    assert not (root / ".artifact-fs" / "git" / "starter-repo").exists()  # no clone yet
    assert (root / "starter-repo").is_dir()  # the mount point, as before
    assert fs(fs_env, "list-repos", "--root", str(root)).stdout.split("\t")[:2] == ["starter-repo", "main"]
    daemon = start_daemon(gate.env, root, "starter-repo", landed=False)
    try:
        mount = root / "starter-repo"
        _check_before_landing(mount, root, "starter-repo")
        busy = fs(fs_env, "prefetch", "--name", "starter-repo", "--root", str(root))  # not a second clone
        assert busy.returncode == 1 and "is being cloned behind its mount" in busy.stderr, busy
        gate.release()
        _check_after_landing(mount, root, "starter-repo")
    finally:
        gate.release()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    assert not os.path.ismount(root / "starter-repo")


def test_gc_of_a_repo_added_but_not_cloned_clones_it_first(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, {"a.txt": b"a\n"})
    assert fs(fs_env, "add-repo", "--name", "later", "--remote", auth_remote(remote, token),
              "--mount-root", str(root)).returncode == 0
    git_dir = root / ".artifact-fs" / "git" / "later" / ".git"
    assert not git_dir.exists()
    done = fs(fs_env, "gc", "--root", str(root))  # it must know the repo's blobs: it clones
    assert done.returncode == 0 and done.stdout.strip() == "removed 0 files (0 bytes)", done
    assert git(f"--git-dir={git_dir}", "rev-parse", "main").strip()


def test_oneshot_mount_answers_from_its_root_while_the_clone_is_held(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, gate: CloneGate
) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, FILES)
    target = root / "work"
    result = subprocess.run([sys.executable, "-m", "artifactd", "mount", auth_remote(remote, token), str(target)],
                            capture_output=True, text=True, timeout=120, env=gate.env)
    assert result.returncode == 0, result.stderr
    try:
        _check_before_landing(target, root, "work")
        gate.release()
        _check_after_landing(target, root, "work")
    finally:
        gate.release()
        subprocess.run([sys.executable, "-m", "artifactd", "unmount", str(target)], capture_output=True, timeout=120)
    assert not os.path.ismount(target)


@pytest.mark.parametrize("filters", [True, False])
def test_oneshot_mount_of_a_plain_git_http_backend_remote(
    tmp_path: Path, root: Path, gate: CloneGate, filters: bool
) -> None:
    """With filters (and tree wants) C git answers the root first; a remote that refuses a
    ``filter tree:1`` fetch gets the clone first, as before, and the log says so."""
    from tests.gitsource import GitSource

    source = GitSource(tmp_path / "upstream").start()
    try:
        work = tmp_path / "work"
        for path, data in FILES.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_bytes(data)
        git("init", "-q", "-b", "main", cwd=work)
        git("add", "-A", cwd=work)
        git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first files", cwd=work)
        bare = source.root / "plain.git"
        git("clone", "-q", "--bare", str(work), str(bare))
        settings = ["uploadpack.allowAnySHA1InWant", "transfer.advertiseObjectInfo"]
        settings += ["uploadpack.allowFilter"] if filters else []
        for key in settings:
            git("--git-dir", str(bare), "config", key, "true")
        if not filters:
            gate.release()  # nothing mounts before the clone here
            os.unlink(gate.fifo)
            gate.fifo.write_bytes(b"")  # a plain file: the clone goes straight on
        target = root / "plain"
        result = subprocess.run([sys.executable, "-m", "artifactd", "mount", f"{source.url}/plain.git",
                                 str(target)], capture_output=True, text=True, timeout=120, env=gate.env)
        assert result.returncode == 0, result.stderr
        try:
            if filters:
                _check_before_landing(target, root, "plain")
                gate.release()
                _check_after_landing(target, root, "plain")
            else:
                assert _events(root, "plain") == ["not"], _log(root, "plain")  # "not from this remote"
                assert sorted(os.listdir(target)) == [".git", "README.md", "bin", "data", "src"]
                assert (target / "README.md").read_bytes() == FILES["README.md"]
                assert "first files" in git("-C", str(target), "log", "--oneline", "-5")
        finally:
            gate.release()
            subprocess.run([sys.executable, "-m", "artifactd", "unmount", str(target)], capture_output=True,
                           timeout=120)
        assert not os.path.ismount(target)
    finally:
        source.stop()


def test_root_of_a_branch_with_history(tmp_path: Path) -> None:
    """A branch of several commits: the root fetch asks for the tip alone (``deepen 1``);
    without it the remote sends every commit of the history and the root read gave up."""
    from tests.gitsource import GitSource

    source = GitSource(tmp_path / "upstream").start()
    try:
        work = tmp_path / "work"
        work.mkdir()
        git("init", "-q", "-b", "main", cwd=work)
        for round_ in range(3):
            (work / "README.md").write_text(f"round {round_}\n")
            (work / "src").mkdir(exist_ok=True)
            (work / "src" / f"f{round_}.py").write_text("x = 1\n")
            git("add", "-A", cwd=work)
            git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", f"c{round_}", cwd=work)
        bare = source.root / "history.git"
        git("clone", "-q", "--bare", str(work), str(bare))
        for key in ("uploadpack.allowFilter", "transfer.advertiseObjectInfo"):
            git("--git-dir", str(bare), "config", key, "true")
        connection = Remote(f"{source.url}/history.git", None, 30)
        try:
            _check(connection, work)
        finally:
            connection.close()
    finally:
        source.stop()
