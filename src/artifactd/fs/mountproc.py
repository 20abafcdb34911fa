"""The process that owns one FUSE mount: ``python -m artifactd.fs.mountproc ROOT NAME``.

It reads the branch's tree from the clone, learns every blob's size (``objectinfo``),
writes an index matching the mount, mounts, and serves until it is unmounted
(``fusermount3 -u``) or gets SIGTERM/SIGINT, then unmounts. Errors are one line on stderr.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from artifactd.fs import credentials, fuseloop, hotset, objectinfo, priority, rootfirst
from artifactd.fs.awire import AsyncRemote
from artifactd.fs.blobcache import BlobCache
from artifactd.fs.fusefs import ArtifactFS
from artifactd.fs.gitcmd import GitFailed, run_git
from artifactd.fs.hydrate import FETCH_TIMEOUT, Hydrator
from artifactd.fs.index import write_index
from artifactd.fs.inputs import InputError
from artifactd.fs.mountprep import Prepared
from artifactd.fs.prefetch import Prefetcher
from artifactd.fs.rootview import RootView
from artifactd.fs.sizes import Sizes
from artifactd.fs.state import RepoConfig, RootState
from artifactd.fs.tree import ROOT_INODE, Entry, Tree
from artifactd.fs.wire import Remote
from artifactd.fs.write import controlserver
from artifactd.fs.write.branch import BranchSync, attach, finish_pending, recover_stale_mount
from artifactd.fs.write.options import MountOptions

DEFAULT_CACHE_BYTES = 2 << 30
SWITCH_INTERVAL = 0.0005
TIMEOUT_ENV = "ARTIFACT_FS_FETCH_TIMEOUT"
RACY_MARGIN = 2  # seconds: an mtime this far before the index keeps git from re-reading files
FORKED_AT: float | None = None  # set by process.fork in the child: when the mount process began


class MountError(RuntimeError):
    pass


def prepare(state: RootState, config: RepoConfig, cache: BlobCache,
            early: Prepared | None = None, hydrator: Hydrator | None = None,
            mtime: int | None = None,
            keep: dict[bytes, int] | None = None) -> tuple[ArtifactFS, Hydrator, str]:
    """The mount's operations, its hydrator and the commit shown. Blob sizes are still
    arriving when this returns: ``operations.sizes.load`` brings them (``sizes.py``).
    ``early`` is the clone's reading and the remote's answers if already started;
    ``hydrator``, ``mtime`` and ``keep`` (path -> inode) those a root-first mount
    (``rootview.py``) already shows."""
    git_dir = state.git_dir(config.name)
    early = early or Prepared(state, config)
    clone = early.clone()
    commit, commit_time, entries, local = clone.commit, clone.commit_time, clone.entries, clone.local
    blob_oids = sorted({e.oid for e in entries if e.kind == "blob"})
    socket = state.credential_socket
    facts = early.remote()
    auth = facts.auth
    kept = hydrator is not None
    if hydrator is None:
        hydrator = Hydrator(git_dir, cache, local, config.remote,
                            lambda: credentials.fill(socket, config.remote), state.stats_file(config.name),
                            {}, fetch_timeout())
    else:
        hydrator.local.update(local)
    sizes = hydrator.sizes
    missing = [oid for oid in blob_oids if oid not in local]
    remote = facts.remote
    has_object_info = False
    if missing:
        if facts.error:  # a bad token or remote fails the mount, before anything is mounted
            raise MountError(facts.error)
        has_object_info = facts.has_object_info
        if not has_object_info:  # a remote without object-info: sizes only by fetching everything, once
            if kept:
                raise MountError("the remote does not answer object-info")
            trio.run(hydrator._hydrate, missing)
    if mtime is None:
        mtime = min(commit_time, int(time.time()) - RACY_MARGIN)
    if not has_object_info:
        sizes.update(local_sizes(git_dir, [oid for oid in blob_oids if oid not in sizes]))
    tree = Tree(entries, sizes, keep)
    inherited = facts.hot_set if missing else []
    if kept:
        remote.close()  # the hydrator's lanes are connected already
    else:
        hydrator.connect(remote)  # kept alive for the first read
    hot = start_hot_set(inherited, tree, hydrator)
    attributes = next((e.oid for e in entries if e.path == b".gitattributes" and e.kind == "blob"), "")
    budget = cache.limit // 2
    prefetcher = Prefetcher(tree, hydrator, lambda binary: warm_order(entries, sizes, binary, budget),
                            hot, attributes)
    prefetcher.inherited = inherited
    gitfile = f"gitdir: {git_dir}\n".encode()
    operations = ArtifactFS(tree, hydrator, gitfile, mtime * 1_000_000_000, prefetcher)

    def index() -> None:
        write_index(git_dir / "index", entries, sizes, mtime)

    if has_object_info:
        def load_all() -> dict[str, int]:
            bulk = Remote(config.remote, auth, objectinfo.TIMEOUT)

            def pace() -> None:
                hydrator.activity.wait_quiet()
                if operations.sizes.all_known.is_set():  # the stats' own requests got them all
                    raise objectinfo.ObjectInfoError("every size is known already")
            try:
                found = objectinfo.sizes(bulk, [oid for oid in missing if oid not in sizes],
                                         objectinfo.BULK_BATCH, pace)
            finally:
                bulk.close()
            found.update(local_sizes(git_dir, [oid for oid in blob_oids if oid in local]))
            return found

        operations.sizes = Sizes(sizes, lambda: operations.tree, load_all,
                                 AsyncRemote(Remote(config.remote, auth, objectinfo.TIMEOUT)), index,
                                 hydrator.activity)
        operations.sizes.outstanding = {oid for oid in blob_oids if oid not in sizes}
    else:
        index()
    return operations, hydrator, commit


def local_sizes(git_dir: Path, oids: list[str]) -> dict[str, int]:
    """Sizes of blobs in the clone's own object store (never a fetch: they are there)."""
    if not oids:
        return {}
    out = run_git(["--git-dir", str(git_dir), "cat-file", "--batch-check=%(objectname) %(objectsize)"],
                  stdin="".join(f"{oid}\n" for oid in oids).encode())
    found = {}
    for line in out.decode().splitlines():
        oid, _, size = line.partition(" ")
        if size.isdigit():
            found[oid] = int(size)
    return found


def fetch_timeout() -> float:
    """Seconds a fetch may stall before its reads fail with EIO (``ARTIFACT_FS_FETCH_TIMEOUT``)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else FETCH_TIMEOUT
    except ValueError:
        raise MountError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise MountError(f"{TIMEOUT_ENV} must be between 0 and 3600 seconds")
    return value


def start_hot_set(paths: list[bytes], tree: Tree, hydrator: Hydrator) -> set[str]:
    """Queue the hot set's files as one batch, fetched as soon as the mount runs."""
    if not paths:
        return set()
    hydrator.fetches += 1  # the fetch of the list itself, counted with the reads' fetches
    by_path = {node.path: node for node in tree.blobs()}
    oids = [by_path[p].oid for p in paths if p in by_path and stat.S_ISREG(by_path[p].mode)]
    hydrator.request(oids)
    return set(oids)


def finish_session(state: RootState, config: RepoConfig, operations: ArtifactFS) -> None:
    """Keep the session's read trace, and store the new hot set on the remote if it changed."""
    prefetcher = operations.prefetcher
    trace = list(prefetcher.trace)
    if not trace:
        return
    hotset.keep_trace(state.trace_file(config.name), trace)
    sizes = {node.path: node.size for node in operations.tree.blobs() if stat.S_ISREG(node.mode)}
    merged = hotset.merge(trace, prefetcher.inherited, sizes)
    if merged != prefetcher.inherited:
        hotset.store(state.git_dir(config.name), merged)


def warm_order(entries: list[Entry], sizes: dict[str, int], binary: list[str],
               budget: int) -> list[tuple[int, str]]:
    """(rank, blob) to hydrate in the background, most useful first, within ``budget`` bytes:
    the smallest files of each rank are chosen first (the most files for the bytes), and
    those chosen go in tree order, the order a reader going through the files takes."""
    ranked = sorted((priority.rank(e.path, binary), sizes.get(e.oid, 0), i, e.oid)
                    for i, e in enumerate(entries) if e.git_mode in ("100644", "100755"))
    chosen: list[tuple[int, int, str]] = []
    for rank, size, i, oid in ranked:
        budget -= size
        if budget < 0:
            break
        chosen.append((rank, i, oid))
    return [(rank, oid) for rank, _, oid in sorted(chosen)]


async def _stop_on_signal() -> None:
    """SIGTERM or SIGINT ends pyfuse3's loop, which unmounts."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return


async def serve(hydrator: Hydrator, sync: BranchSync, control_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        hydrator.activity.touch()
        nursery.start_soon(sync.fs.sizes.load)
        nursery.start_soon(hydrator.run)
        nursery.start_soon(sync.poll)
        nursery.start_soon(controlserver.serve, control_path, sync)
        if sync.options.autocommit_interval > 0:
            nursery.start_soon(sync.autocommit)

        nursery.start_soon(_stop_on_signal)
        gate = sync.fs.read_gate = fuseloop.install()
        gate.work_waiting = lambda: hydrator.queued.is_set()  # replaced, not reset: read it each time
        await pyfuse3.main()
        sync.unmounted = True
        if sync.options.autocommit_on_unmount and sync.layer.dirty:
            await sync.commit_logged("artifact-fs autocommit on unmount")
        nursery.cancel_scope.cancel()


def _check_mount_point(mount_point: Path) -> None:
    recover_stale_mount(mount_point)
    if os.path.ismount(mount_point):
        raise MountError(f"{mount_point} is already a mount point: unmount it (fusermount3 -u) first")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise MountError("/dev/fuse is missing or not accessible: install fuse3 and run with access "
                         "to /dev/fuse (docker: --device /dev/fuse --cap-add SYS_ADMIN)")


def _load(root: Path, name: str) -> tuple[RootState, RepoConfig]:
    state = RootState(root)
    config = state.load(name)
    if config is None:
        raise MountError(f"no repo {name!r} under {root}: run artifact-fs add-repo first")
    return state, config


def _fuse_init(operations: pyfuse3.Operations, mount_point: Path) -> None:
    fuse_options = set(pyfuse3.default_options) | {"fsname=artifact-fs", "subtype=artifactfs"}
    try:
        pyfuse3.init(operations, str(mount_point), fuse_options)
    except RuntimeError as exc:
        raise MountError(f"cannot mount {mount_point}: {exc} "
                         "(is fusermount3 installed and permitted?)") from exc


def mount(root: Path, name: str, cache_bytes: int = DEFAULT_CACHE_BYTES, options: MountOptions | None = None,
          early: Prepared | None = None, ready_fd: int | None = None) -> None:
    state, config = _load(root, name)
    mount_point = Path(config.mount_point)
    _check_mount_point(mount_point)
    finish_pending(state, config)
    state.host.ensure()
    state.host.register(root)  # gc of any root keeps this one's blobs (the cache is the host's)
    operations, hydrator, commit = prepare(state, config, BlobCache(state.blobs, cache_bytes), early)
    sync = attach(operations, state, config, options or MountOptions(), commit)
    _fuse_init(operations, mount_point)
    state.pid_file(name).write_text(f"{os.getpid()}\n")
    signal_ready(ready_fd)
    try:
        trio.run(serve, hydrator, sync, state.control_socket(name))
    finally:
        state.pid_file(name).unlink(missing_ok=True)
        pyfuse3.close(unmount=True)
        sync.layer.overlay.close()
        hydrator.close()
    hydrator.cache.close()
    finish_session(state, config, operations)


def mount_root_first(root: Path, name: str, cache_bytes: int, options: MountOptions | None,
                     clone: Callable[[], object], given: rootfirst.EarlyRoot | None = None,
                     ready_fd: int | None = None) -> None:
    """Mount as soon as the root is read from the remote (``rootfirst``), while ``clone``
    (the blobless clone ``add-repo`` would have run first) runs behind it (``rootview``).
    A remote that cannot answer that way gets the clone first and the usual mount."""
    state, config = _load(root, name)
    mount_point = Path(config.mount_point)
    _check_mount_point(mount_point)
    started = FORKED_AT if FORKED_AT is not None else time.monotonic()
    socket = state.credential_socket
    if given is None:  # read here; ``given``: read by the forking command
        given = rootfirst.EarlyRoot(config.remote, credentials.fill(socket, config.remote), config.branch)
    given.wait()
    remote, first = given.remote, given.read
    if first is None:
        logging.info("root-first: not from this remote (%s): the clone first", given.error)
        clone()
        mount(root, name, cache_bytes, options, ready_fd=ready_fd)
        return
    read_at = time.monotonic()
    state.host.ensure()
    state.host.register(root)
    cache = BlobCache(state.blobs, cache_bytes)
    git_dir = state.git_dir(name)
    hydrator = Hydrator(git_dir, cache, set(), config.remote, lambda: credentials.fill(socket, config.remote),
                        state.stats_file(name), dict(first.sizes), fetch_timeout())
    hydrator.connect(remote)
    mtime = min(first.commit_time, int(time.time()) - RACY_MARGIN)
    early = ArtifactFS(Tree(first.entries, hydrator.sizes), hydrator, f"gitdir: {git_dir}\n".encode(),
                       mtime * 1_000_000_000)
    view = RootView(early, Remote(config.remote, remote.auth, objectinfo.TIMEOUT), reads_wait=first.hot_set)
    _fuse_init(view, mount_point)
    view.note(f"mounted {time.monotonic() - started:.3f} s after the mount process started "
              f"(the root read in {given.seconds:.3f} s, of which {read_at - started:.3f} s here)")
    state.pid_file(name).write_text(f"{os.getpid()}\n")
    signal_ready(ready_fd)
    sync: list[BranchSync] = []
    try:
        trio.run(serve_root_first, view, hydrator, state, config, options or MountOptions(), clone, mtime,
                 sync, started)
    finally:
        state.pid_file(name).unlink(missing_ok=True)
        pyfuse3.close(unmount=True)
        if sync:
            sync[0].layer.overlay.close()
        view.close()
        hydrator.close()
    cache.close()
    if view.full is not None:
        finish_session(state, config, view.full)


async def serve_root_first(view: RootView, hydrator: Hydrator, state: RootState, config: RepoConfig,
                           options: MountOptions, clone: Callable[[], object], mtime: int,
                           synced: list[BranchSync], started: float) -> None:
    async with trio.open_nursery() as nursery:
        hydrator.activity.touch()
        nursery.start_soon(hydrator.run)

        async def land() -> None:
            try:
                await trio.to_thread.run_sync(clone)
                view.note(f"cloned {time.monotonic() - started:.3f} s after the start")
                early = Prepared(state, config)
                await trio.to_thread.run_sync(early.wait)
                keep = {node.path: inode for inode, node in view.early.tree.nodes.items()
                        if inode != ROOT_INODE}
                operations, _, commit = prepare(state, config, hydrator.cache, early, hydrator, mtime, keep)
                sync = attach(operations, state, config, options, commit)
            except (MountError, GitFailed, InputError, objectinfo.ObjectInfoError, OSError) as exc:
                view.fail(str(exc))
                return
            synced.append(sync)
            operations.read_gate = gate
            view.land(operations)
            nursery.start_soon(operations.sizes.load)
            nursery.start_soon(sync.poll)
            nursery.start_soon(controlserver.serve, state.control_socket(config.name), sync)
            if options.autocommit_interval > 0:
                nursery.start_soon(sync.autocommit)

        # pyfuse3's loop without two scheduler passes a request, as in ``serve`` (it was
        # missing here: a root-first mount served every request the slow way).
        gate = view.early.read_gate = fuseloop.install()
        gate.work_waiting = lambda: hydrator.queued.is_set()
        nursery.start_soon(land)
        nursery.start_soon(_stop_on_signal)
        await pyfuse3.main()
        if synced:
            synced[0].unmounted = True
            if options.autocommit_on_unmount and synced[0].layer.dirty:
                await synced[0].commit_logged("artifact-fs autocommit on unmount")
        nursery.cancel_scope.cancel()


def signal_ready(ready_fd: int | None) -> None:
    """Tell the process that forked this one that the mount is up (``process.wait_ready``
    waits on the pipe instead of polling for it)."""
    if ready_fd is not None:
        try:
            os.write(ready_fd, b"1")
        except OSError:  # the forking command is gone: nobody waits
            pass
        finally:
            os.close(ready_fd)


def main() -> int:
    cache_bytes = int(sys.argv[3]) if len(sys.argv) > 3 else DEFAULT_CACHE_BYTES
    return run(Path(sys.argv[1]), sys.argv[2], cache_bytes)


def run(root: Path, name: str, cache_bytes: int, options: MountOptions | None = None,
        early: Prepared | None = None, clone: Callable[[], object] | None = None,
        given: rootfirst.EarlyRoot | None = None, ready_fd: int | None = None) -> int:
    """``clone``: the blobless clone still to run, behind a root-first mount (``rootview``);
    ``given``: its root, read by the forking command."""
    # Fetch threads decode packs in Python; the FUSE loop must not wait 5 ms (the default)
    # for the GIL behind them on every request.
    sys.setswitchinterval(SWITCH_INTERVAL)
    logging.basicConfig(level=logging.INFO, format="artifact-fs: %(message)s")
    try:
        if clone is not None:
            mount_root_first(root, name, cache_bytes, options, clone, given, ready_fd)
        else:
            mount(root, name, cache_bytes, options, early, ready_fd)
    except (MountError, GitFailed, InputError, objectinfo.ObjectInfoError, OSError) as exc:
        print(f"artifact-fs: {name}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
