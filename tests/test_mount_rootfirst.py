"""The root directory read straight from the remote over the git protocol (``fs/rootfirst.py``):
the branch's commit, its root tree (a ``filter tree:1`` fetch) and the root blobs' sizes, from
artifactd and from C ``git http-backend``, matching what git itself says, with no blob bytes."""

from __future__ import annotations

import os
from pathlib import Path

from artifactd.fs import fetchpack, rootfirst
from artifactd.fs.wire import Remote
from tests.harness import Server
from tests.test_mount import FILES, git, make_repo


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


def test_the_tree_filter_fetch_brings_no_blob() -> None:
    body = rootfirst.request_body("a" * 40)
    assert b"filter tree:1\n" in body and b"want " + b"a" * 40 in body
    assert fetchpack.parse_pack  # the blob-only view of a pack is kept for the reads
