"""The hot lookups past SQLAlchemy (storage/sqlitelookups.py, storage/pglookups.py) return
exactly what the SQLAlchemy path returns, on real SQLite and PostgreSQL, and see every
committed change at once (a revoked token fails its next request: no snapshot is kept)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from artifactd.services.access.repo_tokens import new_repo_token
from artifactd.storage.db import make_engine, migrate
from artifactd.storage.metadata import MetadataStore, PushIntentRow, RepoRow


def _repo(n: int, read_only: bool) -> RepoRow:
    return RepoRow(id=f"{n:032x}", account_id="acct", namespace="ns", name=f"r{n}",
                   description="d" if n % 2 else None, default_branch="main",
                   read_only=read_only, source=None, status="ready", status_reason=None,
                   created_us=1, updated_us=2, last_push_us=3, size_bytes=4, maintained_us=5,
                   pushes_since_maintenance=6, import_spec=None)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres").new_database())
    return f"sqlite:///{tmp_path / 'meta.db'}"


def _lookups(store: MetadataStore, repos: list[RepoRow], hashes: list[str],
             token_ids: list[str], api_hash: str) -> list[Any]:
    found: list[Any] = [store.find_api_token(api_hash), store.find_api_token("0" * 64)]
    for repo in repos:
        found += [store.get_repo(repo.account_id, repo.namespace, repo.name),
                  store.get_repo_by_id(repo.id)]
    found += [store.get_repo("acct", "ns", "missing"), store.get_repo_by_id("f" * 32)]
    found += [store.find_repo_token(h) for h in [*hashes, "1" * 64]]
    found += [store.get_repo_token(t) for t in [*token_ids, "nope"]]
    found += [store.account_size("acct"), store.account_size("nobody")]
    found += [store.pending_pushes(repo.id) for repo in repos]
    return found


def test_the_fast_lookups_return_what_sqlalchemy_returns(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate(engine)
        fast = MetadataStore(engine)
        slow = MetadataStore(engine, fast_lookups=False)
        fast.ensure_account("acct", 1)
        fast.insert_api_token(token_id="a" * 16, account_id="acct", secret_hash="e" * 64,
                              permission="edit", name=None, now_us=1)
        repos = [_repo(1, read_only=False), _repo(2, read_only=True)]
        hashes, token_ids = [], []
        for repo in repos:
            token, secret_hash, _ = new_repo_token(repo.id, "write", 3600, 1)
            fast.create_repo(repo, token, secret_hash, [])
            hashes.append(secret_hash)
            token_ids.append(token.id)
        for n in range(2):  # two pushes in flight into the first repo
            intent = PushIntentRow(id=f"in{n}", repo_id=repos[0].id, account_id="acct",
                                   reserved_bytes=100 + n, updates="[]", started_us=n)
            assert fast.reserve_push(intent, 10**9, 10**12) is None
        expected = _lookups(slow, repos, hashes, token_ids, "e" * 64)
        got = _lookups(fast, repos, hashes, token_ids, "e" * 64)
        assert got == expected
        # The same types too (SQLite stores a Boolean as 0/1): equal is not enough.
        assert [type(v) for v in vars(got[2])] == [type(v) for v in vars(expected[2])]
        assert got[4].read_only is True and got[2].read_only is False
        assert got[-7] is not None and got[-7].revoked_us is None
        assert got[-4] == 100 + 101  # the two reservations
        assert len(got[-2]) == 2 and got[-1] == []

        fast.revoke_repo_token(token_ids[0], 10)
        assert fast.get_repo_token(token_ids[0]).revoked_us == 10  # type: ignore[union-attr]
        found = fast.find_repo_token(hashes[0])
        assert found is not None and found[0].revoked_us == 10
        fast.close()
        slow.close()
    finally:
        engine.dispose()


def test_sqlite_lookups_skip_sqlalchemy_and_see_each_commit(tmp_path: Path) -> None:
    """No lookup reaches SQLAlchemy's execution (it fails on the lookups through the pool),
    and a lookup made after a commit on another connection, from any thread, sees it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        migrate(engine)
        store = MetadataStore(engine)
        repo = _repo(7, read_only=False)
        token, secret_hash, _ = new_repo_token(repo.id, "read", 3600, 1)
        store.create_repo(repo, token, secret_hash, [])
        executed: list[str] = []
        event.listen(engine, "before_cursor_execute",
                     lambda _c, _cur, statement, *_: executed.append(statement))
        for _ in range(3):
            assert store.find_repo_token(secret_hash) is not None
            assert store.get_repo("acct", "ns", repo.name) is not None
        assert executed == []

        # The event loop's connection has looked up before; a fresh thread opens its own.
        in_thread: list[Any] = []
        store.revoke_repo_token(token.id, 20)  # a write on the engine's pool
        thread = threading.Thread(target=lambda: in_thread.append(store.find_repo_token(secret_hash)))
        thread.start()
        thread.join()
        found = store.find_repo_token(secret_hash)
        assert found is not None and found[0].revoked_us == 20
        assert in_thread[0] is not None and in_thread[0][0].revoked_us == 20
        store.update_repo(repo.id, read_only=True)
        changed = store.get_repo("acct", "ns", repo.name)
        assert changed is not None and changed.read_only is True

        store.delete_repo(repo.id)
        assert store.find_repo_token(secret_hash) is None
        assert store.get_repo_by_id(repo.id) is None
        store.close()
    finally:
        engine.dispose()


def test_a_finished_threads_connection_is_closed(tmp_path: Path) -> None:
    """The thread pool's threads come and go: their connections must not pile up."""
    from sqlalchemy import bindparam, select

    from artifactd.storage.schema import api_tokens
    from artifactd.storage.sqlitelookups import SqliteLookups

    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        migrate(engine)
        lookups = SqliteLookups(tmp_path / "meta.db")
        lookup = lookups.lookup(select(api_tokens).where(api_tokens.c.secret_hash == bindparam("h")))
        for _ in range(5):
            thread = threading.Thread(target=lambda: lookups.first(lookup, {"h": "x"}))
            thread.start()
            thread.join()
        assert lookups.first(lookup, {"h": "x"}) is None
        assert lookups.open_connections <= 2  # this thread's, and at most the last one's
        lookups.close()
        assert lookups.open_connections == 0
    finally:
        engine.dispose()
