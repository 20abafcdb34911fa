"""Blob sizes that arrive after the mount is up (fs/sizes.py), against a real server: a
``stat`` of a blob whose size is still loading gets the right size by asking for it, and
the index (what ``.git`` waits for) is written only once every size is in; and a read's
fetch over the event loop's own kept-alive connection (fs/awire.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

from artifactd.fs import fetchpack, objectinfo
from artifactd.fs import sizes as sizes_module
from artifactd.fs.awire import AsyncRemote
from artifactd.fs.sizes import Sizes, SizesUnavailable
from artifactd.fs.tree import UNSIZED, Tree, list_tree
from artifactd.fs.wire import Remote
from tests.harness import Server
from tests.test_mount import make_repo


def test_a_stat_while_sizes_load_gets_the_right_size_and_the_index_waits_for_all(
    sqlite_server: Server, unique_name: str, tmp_path: Path
) -> None:
    files = {"a/big.txt": b"x" * 70_000, "a/small.txt": b"s\n", "b/c/deep.bin": bytes(range(256)) * 9}
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, files)
    entries = list_tree(tmp_path / f"src-{unique_name}" / ".git", "HEAD")
    known: dict[str, int] = {}
    tree = Tree(entries, known)
    nodes = {node.path.decode(): node for node in tree.blobs()}
    assert {path: node.size for path, node in nodes.items()} == dict.fromkeys(files, UNSIZED)
    auth = ("x", token.split("?expires=")[0])
    release = threading.Event()
    written: list[bool] = []

    def load_all() -> dict[str, int]:  # the background load, held back until the test says
        assert release.wait(60)
        bulk = Remote(remote, auth, 30)
        try:
            return objectinfo.sizes(bulk, sorted({node.oid for node in nodes.values()}))
        finally:
            bulk.close()

    sizes = Sizes(known, lambda: tree, load_all, AsyncRemote(Remote(remote, auth, 30)),
                  lambda: written.append(True))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sizes.load)
            await sizes.wait([nodes["a/big.txt"]])  # the load is still held back
            assert nodes["a/big.txt"].size == 70_000
            assert not sizes.all_known.is_set() and not sizes.index_ready.is_set() and not written
            assert nodes["b/c/deep.bin"].size == UNSIZED  # only what was asked for
            release.set()
            await sizes.index_ready.wait()
            assert written == [True]

    trio.run(main)
    assert {path: node.size for path, node in nodes.items()} == {p: len(d) for p, d in files.items()}


def test_when_the_stats_have_asked_for_every_size_the_index_is_written_without_the_bulk_load(
    sqlite_server: Server, unique_name: str, tmp_path: Path
) -> None:
    # An `ls -lR` right after the mount asks for every size itself: the index (what a
    # `git status` opening `.git` waits for) is written then, not after the paced bulk load.
    files = {"a/one.txt": b"1\n", "a/two.txt": b"22\n", "b/c/three.bin": bytes(range(256))}
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, files)
    entries = list_tree(tmp_path / f"src-{unique_name}" / ".git", "HEAD")
    known: dict[str, int] = {}
    tree = Tree(entries, known)
    nodes = list(tree.blobs())
    auth = ("x", token.split("?expires=")[0])
    release = threading.Event()
    written: list[bool] = []
    sizes: Sizes

    def load_all() -> dict[str, int]:  # held back, then stopped as the mount's pace stops it
        assert release.wait(60)
        if sizes.all_known.is_set():
            raise objectinfo.ObjectInfoError("every size is known already")
        return {}

    sizes = Sizes(known, lambda: tree, load_all, AsyncRemote(Remote(remote, auth, 30)),
                  lambda: written.append(True))
    sizes.outstanding = {node.oid for node in nodes}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sizes.load)
            await sizes.wait(nodes[:1])
            assert not sizes.index_ready.is_set()  # one size is not all of them
            await sizes.wait(nodes)  # the rest, as the listing of every directory asks
            assert sizes.all_known.is_set() and sizes.index_ready.is_set() and written == [True]
            release.set()
        assert written == [True] and not sizes.failed and sizes.error == ""

    trio.run(main)
    assert {node.path.decode(): node.size for node in nodes} == {p: len(d) for p, d in files.items()}


def test_a_size_the_remote_cannot_give_fails_the_stat_and_the_index_gives_up(
    sqlite_server: Server, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sizes_module, "RETRY_SECONDS", 0.01)
    remote, _ = make_repo(sqlite_server, unique_name, tmp_path, {"f.txt": b"f\n"})
    entries = list_tree(tmp_path / f"src-{unique_name}" / ".git", "HEAD")
    tree = Tree(entries, {})
    node = next(tree.blobs())
    bad = ("x", "not-a-token")

    def load_all() -> dict[str, int]:
        raise objectinfo.ObjectInfoError("refused")

    sizes = Sizes({}, lambda: tree, load_all, AsyncRemote(Remote(remote, bad, 30)), None)

    async def main() -> None:
        with trio.fail_after(60):
            with pytest.raises(SizesUnavailable, match="HTTP 401"):
                await sizes.wait([node])
            await sizes.load()  # every retry fails: `.git` stops waiting and says EIO
        assert sizes.failed and node.size == UNSIZED

    trio.run(main)


def test_a_reads_fetch_on_the_event_loop_gets_its_blob_over_one_kept_alive_connection(
    sqlite_server: Server, unique_name: str, tmp_path: Path
) -> None:
    files = {"one.txt": b"one\n" * 1000, "two.txt": b"two\n"}
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, files)
    by_path = {e.path.decode(): e.oid for e in list_tree(tmp_path / f"src-{unique_name}" / ".git", "HEAD")}
    connection = AsyncRemote(Remote(remote, ("x", token.split("?expires=")[0]), 30))

    async def main() -> list[list[bytes]]:
        got = []
        streams = []
        for path in ("one.txt", "two.txt"):
            status, body = await connection.request("POST", "/git-upload-pack",
                                                    fetchpack.request_body([by_path[path]]),
                                                    fetchpack.POST_HEADERS)
            got.append(fetchpack.answer(status, body))
            streams.append(connection.stream)
        assert streams[0] is not None and streams[0] is streams[1]  # kept alive, not reopened
        await connection.aclose()
        return got

    assert trio.run(main) == [[files["one.txt"]], [files["two.txt"]]]
