"""The hot write paths (create, push admission and record, delete) execute statements built
once: a statement built per call costs SQLAlchemy a new object and a new cache-key traversal
each time (docs/benchmarks.md, Agent loop). On SQLite they skip SQLAlchemy's execution and are
compiled once each (storage/sqliteexec.py). Real SQLite and PostgreSQL; the totals must stay
exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from artifactd.services.access.repo_tokens import new_repo_token
from artifactd.storage.db import make_engine, migrate
from artifactd.storage.metadata import MetadataStore, OutboxRow, PushIntentRow, RepoRow

LIMIT = 10_000


class Recorder:
    """The statements the store executes while ``on`` (the checks' reads are not watched)."""

    def __init__(self) -> None:
        self.on = True
        self.executed: list[Any] = []

    def __call__(self, _conn: Any, statement: Any, *_: Any) -> None:
        if self.on:
            self.executed.append(statement)


def _cycle(store: MetadataStore, n: int, recorder: Recorder) -> None:
    """One agent loop's writes: create, a refused push, an admitted one, delete."""
    repo_id = f"{n:032x}"
    repo = RepoRow(id=repo_id, account_id="acct", namespace="ns", name=f"r{n}",
                   description=None, default_branch="main", read_only=False, source=None,
                   status="ready", status_reason=None, created_us=1, updated_us=1,
                   last_push_us=0, size_bytes=0, maintained_us=0, pushes_since_maintenance=0,
                   import_spec=None)
    token, secret_hash, _ = new_repo_token(repo_id, "write", 3600, 1)
    event_row = OutboxRow(id=f"evt_{n}", account_id="acct", type="cf.artifacts.repo.created",
                          namespace="ns", repo_name=f"r{n}", payload="{}", created_us=1)
    store.create_repo(repo, token, secret_hash, [event_row])
    too_big = PushIntentRow(id=f"big{n}", repo_id=repo_id, account_id="acct",
                            reserved_bytes=LIMIT + 1, updates="[]", started_us=1)
    assert store.reserve_push(too_big, LIMIT, LIMIT * 10) == "repo"
    intent = PushIntentRow(id=f"in{n}", repo_id=repo_id, account_id="acct",
                           reserved_bytes=500, updates="[]", started_us=1)
    assert store.reserve_push(intent, LIMIT, LIMIT * 10) is None
    assert store.account_size("acct") == 500
    assert store.finish_push(intent.id, repo_id, lambda: 300, pushed_us=2)
    assert not store.finish_push(intent.id, repo_id, lambda: 300, pushed_us=2)  # only once
    assert store.pending_pushes(repo_id) == []
    recorder.on = False
    assert store.account_usage("acct") == (300, 0)
    recorded = store.get_repo_by_id(repo_id)
    assert recorded is not None
    assert (recorded.size_bytes, recorded.reserved_bytes, recorded.last_push_us,
            recorded.pushes_since_maintenance) == (300, 0, 2, 1)
    recorder.on = True
    assert store.delete_repo(repo_id)
    recorder.on = False
    assert store.account_usage("acct") == (0, 0)
    assert store.count_repos("acct", "ns") == 0
    recorder.on = True


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_hot_write_paths_reuse_their_statements(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (request.getfixturevalue("postgres").new_database() if database == "postgres"
           else f"sqlite:///{tmp_path / 'meta.db'}")
    engine = make_engine(url)
    recorder = Recorder()
    try:
        migrate(engine)
        store = MetadataStore(engine)
        event.listen(engine, "before_execute", recorder)
        _cycle(store, 1, recorder)  # the first also creates the namespace
        cycles = []
        compiled = []
        for n in (2, 3):
            recorder.executed.clear()
            _cycle(store, n, recorder)
            cycles.append({id(statement) for statement in recorder.executed})
            if store.sqlite_statements is not None:
                compiled.append(store.sqlite_statements.compiled_count)
        if database == "sqlite":
            # Past SQLAlchemy (storage/sqliteexec.py), each compiled once: nothing new later.
            assert cycles == [set(), set()], "a hot statement went through SQLAlchemy"
            assert compiled[0] > 10
            assert compiled[0] == compiled[1], "a statement was compiled anew for the second loop"
            return
        assert len(cycles[0]) > 10
        assert cycles[0] == cycles[1], "a statement was built anew for the second loop"
    finally:
        engine.dispose()
