"""ArtifactFS's read path on a real mount: the learned hot set a fork inherits, the prefetch
order, the cache commands, and a directory of 100k files."""

# ruff: noqa: F811 - the mount fixtures (root, fs_env) are test_mount's, imported by name

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from bench.synth import zero_blob_pack

from artifactd.fs import priority
from artifactd.fs.blobcache import BlobCache
from artifactd.fs.hydrate import STREAM_BYTES, Hydrator
from artifactd.fs.prefetch import Prefetcher
from artifactd.fs.tree import Entry, Tree
from tests.harness import Server
from tests.test_mount import (  # noqa: F401 - fixtures
    auth_remote,
    cached_blobs,
    fs,
    fs_env,
    git,
    host_cache,
    make_repo,
    pytestmark,
    root,
    start_daemon,
    stop_daemon,
    wait_cached,
)


def stats(root: Path, name: str) -> dict[str, int]:
    return dict(json.loads((root / ".artifact-fs" / "run" / f"{name}.stats").read_text()))


def settled_stats(root: Path, name: str, blobs: int) -> dict[str, int]:
    """The mount's counts once they count ``blobs`` blobs: a background batch's blobs reach the
    disk (the writer process) just before the fetch that brought them is counted."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if (found := stats(root, name))["blobs"] >= blobs:
                return found
        time.sleep(0.02)
    return stats(root, name)


def add(fs_env: dict[str, str], root: Path, name: str, remote: str, token: str) -> None:
    result = fs(fs_env, "add-repo", "--name", name, "--remote", auth_remote(remote, token),
                "--branch", "main", "--mount-root", str(root))
    assert result.returncode == 0, result.stderr


def test_a_fork_inherits_the_hot_set_and_fetches_it_in_one_batch_at_mount_time(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    files = {f"pkg{d}/mod{i:02}.py": f"V = {d}{i}\n".encode() for d in range(3) for i in range(20)}
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, files)
    hot = ["pkg0/mod03.py", "pkg1/mod07.py", "pkg1/mod08.py", "pkg2/mod19.py"]
    add(fs_env, root, unique_name, remote, token)
    daemon = start_daemon(fs_env, root, unique_name)
    for path in hot:  # the baseline's agent session
        assert (root / unique_name / path).read_bytes() == files[path]
    stop_daemon(daemon, root, unique_name)
    trace = (root / ".artifact-fs" / "run" / f"{unique_name}.trace").read_text().splitlines()
    assert json.loads(trace[-1])["paths"] == hot
    assert "refs/artifact-fs/hotset" in git("ls-remote", auth_remote(remote, token))

    fork_name = f"{unique_name}-fork"
    with sqlite_server.client() as api:
        forked = api.post(f"/repos/{unique_name}/fork", json={"name": fork_name}).json()
        assert forked["success"], forked
    assert fs(fs_env, "remove-repo", "--name", unique_name, "--root", str(root)).returncode == 0
    assert fs(fs_env, "evict-cache", "--root", str(root), "--max-bytes", "0").returncode == 0
    assert cached_blobs(root) == []
    add(fs_env, root, fork_name, forked["result"]["remote"], forked["result"]["token"])
    # Mounted root first (add-repo made no clone): the reads start before the clone lands, and
    # wait for the hot set's batch rather than fetch one by one.
    daemon = start_daemon(fs_env, root, fork_name, landed=False)
    mount = root / fork_name
    for path in hot:  # the fork's first agent session, at once: the same working set
        assert (mount / path).read_bytes() == files[path]
    # Fetched in one batch at mount time: the hot set's blobs, and only them.
    assert len(wait_cached(root, len(hot))) == len(hot)
    assert settled_stats(root, fork_name, len(hot)) == {"fetches": 2, "blobs": len(hot)}  # the list, the batch
    assert len(cached_blobs(root)) == len(hot)  # staying inside the hot set prefetches nothing
    # A read outside the hot set is a fetch of its own, and starts the ordinary prefetch.
    assert (mount / "pkg0" / "mod00.py").read_bytes() == files["pkg0/mod00.py"]
    assert stats(root, fork_name)["fetches"] >= 3
    stop_daemon(daemon, root, fork_name)


def entry(path: str, oid: str) -> Entry:
    return Entry("100644", "blob", oid, path.encode())


def test_prefetch_order_manifests_source_rest_binaries_last(tmp_path: Path) -> None:
    attributes = b"*.dat binary\nassets/** -text\n"
    cache = BlobCache(tmp_path / "blobs", 1 << 30)
    attributes_oid = cache.put(attributes)
    cache.flush()
    names = ["docs/notes.txt", "src/app.py", "assets/logo.svg", "src/blob.dat", "package.json",
             "src/image.png", "yarn.lock", "src/lib.rs", "README"]
    entries = [Entry("040000", "tree", "d" * 40, d.encode()) for d in ("assets", "docs", "src")]
    entries += [entry(n, f"{i:040x}") for i, n in enumerate(names)]
    entries.append(entry(".gitattributes", attributes_oid))
    tree = Tree(entries, {e.oid: 10 for e in entries})
    hydrator = Hydrator(tmp_path / "git", cache, set())
    order = sorted(((priority.rank(e.path, priority.binary_patterns(attributes)), i, e.oid)
                    for i, e in enumerate(entries) if e.kind == "blob"))
    prefetcher = Prefetcher(tree, hydrator, lambda binary: [(r, oid) for r, _, oid in order],
                            attributes_oid=attributes_oid)
    docs = next(n for n in tree.nodes.values() if n.path == b"docs/notes.txt")
    prefetcher.before_read(docs)
    hydrator.request([docs.oid])  # what the read's own ensure() does: urgent, alone
    assert hydrator._take() == ([docs.oid], False)  # .gitattributes is cached already
    hydrator.urgent_lanes = 0
    cache.used[docs.oid] = 10  # as if its fetch had arrived
    prefetcher.after_read()
    for key, oids in hydrator.producers.pop(0)():  # the plan a free lane makes on a thread
        hydrator.prefetch(oids, key)
    taken: list[str] = []
    while True:
        batch, _ = hydrator._take()
        if not batch:
            break
        taken += batch
        hydrator.background_lanes = 0
    by_oid = {e.oid: e.path.decode() for e in entries}
    paths = [by_oid[oid] for oid in taken]
    assert paths[:2] == ["package.json", "yarn.lock"]  # manifests and lock files
    assert set(paths[2:4]) == {"src/app.py", "src/lib.rs"}  # then source
    assert paths[4] == "README"  # then the rest
    assert set(paths[5:]) == {"assets/logo.svg", "src/blob.dat", "src/image.png"}  # binaries last
    assert "docs/notes.txt" not in paths


def test_cache_commands_prefetch_evict_and_gc(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    files = {f"a/f{i}.txt": f"a{i}\n".encode() * 100 for i in range(10)}
    files.update({f"b/g{i}.txt": f"b{i}\n".encode() * 100 for i in range(5)})
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, files)
    add(fs_env, root, unique_name, remote, token)
    done = fs(fs_env, "prefetch", "--name", unique_name, "--root", str(root), "a")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "prefetched 10 blobs (3000 bytes) in 1 requests"
    blobs = cached_blobs(root)
    assert len(blobs) == 10
    for path in blobs:  # content-addressed: each file is the blob its name says
        data = path.read_bytes()
        oid = subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True,
                             check=True).stdout.decode().strip()
        assert oid == path.parent.name + path.name
    for bad, message in (("../x", "not a path inside the repo"), ("/a", "not a path inside the repo"),
                         ("nope", "no file of the branch")):
        refused = fs(fs_env, "prefetch", "--name", unique_name, "--root", str(root), bad)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
    assert len(cached_blobs(root)) == 10  # nothing changed
    rest = fs(fs_env, "prefetch", "--name", unique_name, "--root", str(root))  # the whole branch
    assert rest.stdout.strip() == "prefetched 5 blobs (1500 bytes) in 1 requests", rest.stderr
    blobs = cached_blobs(root)
    # A running mount reads what prefetch put there: no fetch at all (not even its warm-up).
    daemon = start_daemon(fs_env, root, unique_name)
    assert (root / unique_name / "a" / "f3.txt").read_bytes() == files["a/f3.txt"]
    assert (root / unique_name / "b" / "g1.txt").read_bytes() == files["b/g1.txt"]
    stop_daemon(daemon, root, unique_name)
    assert not (root / ".artifact-fs" / "run" / f"{unique_name}.stats").exists()
    # evict-cache: least recently read first. f3 was just read, so it stays.
    f3 = next(p for p in blobs if p.read_bytes() == files["a/f3.txt"])
    for path in blobs:
        if path != f3:
            os.utime(path, (time.time() - 3600, time.time() - 3600))
    evicted = fs(fs_env, "evict-cache", "--root", str(root), "--max-bytes", "500")
    assert evicted.returncode == 0 and evicted.stdout.strip() == "freed 4200 bytes"
    assert cached_blobs(root) == [f3]
    # gc: blobs no repo's branch has, and stale partial writes, go; referenced ones stay.
    stray = host_cache(root.parent) / "blobs" / "ff" / ("f" * 38)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"stray")
    partial = f3.with_name(f"{f3.name}.999999999.tmp")
    partial.write_bytes(b"half")
    collected = fs(fs_env, "gc", "--root", str(root))
    assert collected.returncode == 0 and collected.stdout.strip() == "removed 2 files (9 bytes)"
    assert cached_blobs(root) == [f3]


def test_a_directory_of_100k_files(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    created = sqlite_server.client().post("/repos", json={"name": unique_name}).json()["result"]
    remote, token = created["remote"], created["token"]
    source = tmp_path / "big.git"
    git("init", "-q", "--bare", "-b", "main", str(source))
    count = 100_000

    def run(*args: str, stdin: bytes = b"") -> str:
        return subprocess.run(["git", f"--git-dir={source}", *args], input=stdin, capture_output=True,
                              check=True).stdout.decode().strip()

    # One blob under 100k names, by mktree (fast-import's tree building is quadratic here).
    blob = run("hash-object", "-w", "--stdin", stdin=b"same!\n")
    wide = run("mktree", stdin=b"".join(b"100644 blob %s\tf%06d.txt\n" % (blob.encode(), i)
                                         for i in range(count)))
    top = run("mktree", stdin=f"040000 tree {wide}\twide\n".encode())
    commit = subprocess.run(["git", f"--git-dir={source}", "-c", "user.name=T", "-c", "user.email=t@example.com",
                             "commit-tree", top, "-m", "big"], capture_output=True, check=True).stdout.decode().strip()
    run("update-ref", "refs/heads/main", commit)
    git(f"--git-dir={source}", "push", "-q", auth_remote(remote, token), "main")
    add(fs_env, root, unique_name, remote, token)
    daemon = start_daemon(fs_env, root, unique_name)
    wide = root / unique_name / "wide"
    names = os.listdir(wide)
    assert len(names) == count and names[0] == "f000000.txt" and names[-1] == "f099999.txt"
    assert os.stat(wide / "f054321.txt").st_size == 6
    long_listing = subprocess.run(["ls", "-l", str(wide)], capture_output=True, text=True, check=True).stdout
    assert long_listing.count(" 6 ") >= count  # every entry with its size, none fetched
    assert cached_blobs(root) == []
    assert (wide / "f099999.txt").read_bytes() == b"same!\n"
    pid = int((root / ".artifact-fs" / "run" / f"{unique_name}.pid").read_text())
    assert peak_memory(pid) < 400 << 20  # the tree of 100k entries, not copies of it per listing
    stop_daemon(daemon, root, unique_name)




def test_a_stalled_server_fails_the_read_with_eio_after_the_timeout_and_the_mount_stays_up(
    tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    from tests.harness import start_server

    server = start_server(tmp_path / "data")
    try:
        files = {"x/a.txt": b"a\n", "y/b.txt": b"b\n"}
        remote, token = make_repo(server, "stall", tmp_path, files)
        add(fs_env, root, "stall", remote, token)
        daemon = start_daemon({**fs_env, "ARTIFACT_FS_FETCH_TIMEOUT": "2"}, root, "stall")
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)  # alive, connected, answering nothing
        try:
            with pytest.raises(OSError) as failed:
                (root / "stall" / "x" / "a.txt").read_bytes()
            assert failed.value.errno == errno.EIO
            assert os.path.ismount(root / "stall") and sorted(os.listdir(root / "stall")) == [".git", "x", "y"]
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert (root / "stall" / "x" / "a.txt").read_bytes() == b"a\n"  # the next read tries again
        stop_daemon(daemon, root, "stall")
    finally:
        server.stop()


def test_a_large_file_is_streamed_through_git_not_held_in_memory(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    big = os.urandom(STREAM_BYTES + 1)  # past the bound: fetched by git, copied out in chunks
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, {"big.bin": big, "small.txt": b"s\n"})
    add(fs_env, root, unique_name, remote, token)
    packs = root / ".artifact-fs" / "git" / unique_name / ".git" / "objects" / "pack"
    daemon = start_daemon(fs_env, root, unique_name)  # the clone landed: its pack is there
    before = len(list(packs.glob("*.pack")))
    pid = int((root / ".artifact-fs" / "run" / f"{unique_name}.pid").read_text())
    mount = root / unique_name
    assert os.stat(mount / "big.bin").st_size == len(big)
    peak_before = peak_memory(pid)
    digest = hashlib.sha256()
    with open(mount / "big.bin", "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    assert digest.digest() == hashlib.sha256(big).digest()
    assert len(list(packs.glob("*.pack"))) == before + 1  # git's own fetch, streamed to disk
    assert peak_memory(pid) - peak_before < len(big) // 2  # never the whole blob in the process
    stop_daemon(daemon, root, unique_name)


def peak_memory(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def daemon_under(env: dict[str, str], root: Path, name: str, *options: str) -> subprocess.Popen[bytes]:
    """``artifact-fs daemon`` for a second mount root (``start_daemon`` with options)."""
    daemon = subprocess.Popen(["artifact-fs", "daemon", "--root", str(root), *options], env=env)
    (root / "daemon.pid").write_text(str(daemon.pid))
    deadline = time.monotonic() + 60
    while not os.path.ismount(root / name):
        assert daemon.poll() is None, "the daemon exited before mounting"
        assert time.monotonic() < deadline, "not mounted after 60 s"
        time.sleep(0.05)
    return daemon


def unmount_all(root: Path) -> None:
    """A second root's teardown (the ``root`` fixture's own covers only the first)."""
    if (root / "daemon.pid").exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int((root / "daemon.pid").read_text()), signal.SIGTERM)
    for entry in root.iterdir():
        if os.path.ismount(entry):
            subprocess.run(["fusermount3", "-u", "-z", str(entry)], capture_output=True)
    socket = root / ".artifact-fs" / "run" / "credential-socket"
    if socket.exists():
        subprocess.run(["git", "credential-cache", f"--socket={socket}", "exit"], capture_output=True)


def test_a_fork_under_another_mount_root_reads_its_baselines_bytes_from_the_host_cache(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    files = {f"src/m{i:02}.py": f"N = {i}\n".encode() * 40 for i in range(30)}
    files["README.md"] = b"# base\n"
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, files)
    add(fs_env, root, unique_name, remote, token)
    daemon = start_daemon(fs_env, root, unique_name)
    for path, data in files.items():  # the baseline's session reads everything
        assert (root / unique_name / path).read_bytes() == data
    stop_daemon(daemon, root, unique_name)  # its blobs are on disk once it has stopped
    before = sorted(cached_blobs(root))
    assert len(before) == len(files)
    assert stats(root, unique_name)["blobs"] == len(files)

    fork_name = f"{unique_name}-fork"
    with sqlite_server.client() as api:
        forked = api.post(f"/repos/{unique_name}/fork", json={"name": fork_name}).json()
        assert forked["success"], forked
    other = tmp_path / "other-root"  # another root: another state dir, the same host cache
    other.mkdir()
    try:
        add(fs_env, other, fork_name, forked["result"]["remote"], forked["result"]["token"])
        daemon = daemon_under(fs_env, other, fork_name)
        for path, data in files.items():
            assert (other / fork_name / path).read_bytes() == data
        stop_daemon(daemon, other, fork_name)
    finally:
        unmount_all(other)
    fork_stats = other / ".artifact-fs" / "run" / f"{fork_name}.stats"
    assert not fork_stats.exists() or stats(other, fork_name)["blobs"] == 0, fork_stats.read_text()
    assert sorted(cached_blobs(root)) == before  # no second copy of any byte
    # gc from either root keeps the blobs the other root's branch has.
    assert fs(fs_env, "remove-repo", "--name", unique_name, "--root", str(root)).returncode == 0
    collected = fs(fs_env, "gc", "--root", str(root))
    assert collected.returncode == 0 and collected.stdout.strip() == "removed 0 files (0 bytes)", collected
    assert sorted(cached_blobs(root)) == before


def test_the_host_cache_limit_holds_across_two_mounts_at_once_least_recent_first(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    size, limit = 300_000, 1 << 20
    first = {f"a/f{i}.bin": os.urandom(size) for i in range(4)}
    second = {f"b/g{i}.bin": os.urandom(size) for i in range(4)}
    remote_a, token_a = make_repo(sqlite_server, unique_name, tmp_path, first)
    remote_b, token_b = make_repo(sqlite_server, f"{unique_name}-b", tmp_path, second)
    add(fs_env, root, unique_name, remote_a, token_a)
    other = tmp_path / "other-root"
    other.mkdir()
    try:
        add(fs_env, other, f"{unique_name}-b", remote_b, token_b)
        daemon_a = daemon_under(fs_env, root, unique_name, "--cache-bytes", str(limit))
        for path, data in first.items():
            assert (root / unique_name / path).read_bytes() == data
        daemon_b = daemon_under(fs_env, other, f"{unique_name}-b", "--cache-bytes", str(limit))
        for path, data in second.items():  # while the first mount still runs
            assert (other / f"{unique_name}-b" / path).read_bytes() == data
        stop_daemon(daemon_b, other, f"{unique_name}-b")
        stop_daemon(daemon_a, root, unique_name)
    finally:
        unmount_all(other)
    left = cached_blobs(root)
    on_disk = sum(p.stat().st_size for p in left)
    assert on_disk <= limit  # both mounts' bytes together, not each mount's own
    newest = {hashlib.sha1(b"blob %d\0" % size + d).hexdigest() for d in second.values()}
    assert len(left) == 3 and {p.parent.name + p.name for p in left} <= newest  # the first mount's went first
    usage = host_cache(tmp_path) / "blobs.usage"
    assert int(usage.read_text()) == on_disk  # the shared count is the folder's


@pytest.mark.timeout(900)  # 2 GB inflated and hashed three times (server, clone, cache): minutes when busy
def test_a_2_gb_file_has_its_size_before_hydration_and_streams_in_bounded_memory(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    size = 2_000_000_000
    source = tmp_path / "huge.git"
    git("init", "-q", "--bare", "-b", "main", str(source))
    pack = source / "objects" / "pack" / "pack-huge.pack"
    blob = zero_blob_pack(pack, size)
    small = subprocess.run(["git", f"--git-dir={source}", "hash-object", "-w", "--stdin"], input=b"small\n",
                           capture_output=True, check=True).stdout.decode().strip()
    tree = subprocess.run(["git", f"--git-dir={source}", "mktree"], capture_output=True, check=True,
                          input=f"100644 blob {blob}\thuge.bin\n100644 blob {small}\tsmall.txt\n".encode()
                          ).stdout.decode().strip()
    commit = git(f"--git-dir={source}", "-c", "user.name=T", "-c", "user.email=t@example.com",
                 "commit-tree", tree, "-m", "a 2 GB file").strip()
    git(f"--git-dir={source}", "update-ref", "refs/heads/main", commit)
    created = sqlite_server.client().post("/repos", json={"name": unique_name}).json()["result"]
    subprocess.run(["git", f"--git-dir={source}", "push", "-q", auth_remote(created["remote"], created["token"]),
                    "main"], check=True, capture_output=True, timeout=600)
    shutil.rmtree(source)  # 2 MB of pack here, but the disk the test uses is the cache's
    add(fs_env, root, unique_name, created["remote"], created["token"])
    daemon = start_daemon(fs_env, root, unique_name)
    try:
        mount = root / unique_name
        assert os.stat(mount / "huge.bin").st_size == size  # known at mount time: nothing fetched
        assert "2000000000" in subprocess.run(["ls", "-l", str(mount)], capture_output=True, text=True,
                                              check=True).stdout
        assert cached_blobs(root) == []
        pid = int((root / ".artifact-fs" / "run" / f"{unique_name}.pid").read_text())
        peak_before = peak_memory(pid)
        zeros = bytes(4 << 20)
        with open(mount / "huge.bin", "rb") as stream:  # the first read hydrates the whole blob
            for at in (0, size // 2 + 12345, size - len(zeros)):
                stream.seek(at)
                assert stream.read(len(zeros)) == zeros
            assert stream.read(1) == b""
        assert peak_memory(pid) - peak_before < 256 << 20  # streamed, never held whole
        assert os.path.ismount(mount) and (mount / "small.txt").read_bytes() == b"small\n"
        stop_daemon(daemon, root, unique_name)
    finally:
        for path in cached_blobs(root):  # 2 GB: not left for pytest's kept temp dirs
            path.unlink()
        shutil.rmtree(root / ".artifact-fs" / "git" / unique_name, ignore_errors=True)
