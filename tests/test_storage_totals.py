"""Migration 0004 backfills the accounts' running storage totals from the repos' sizes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from artifactd.storage.db import MIGRATIONS_DIR, make_engine, migrate


def test_migration_backfills_account_totals(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    rows = [("a" * 32, "acct1", "r1", 1000), ("b" * 32, "acct1", "r2", 234), ("c" * 32, "acct2", "r1", 5)]
    with engine.begin() as connection:
        for repo_id, account, name, size in rows:
            connection.execute(text(
                "INSERT INTO repos (id, account_id, namespace, name, default_branch, read_only, "
                "status, created_us, updated_us, last_push_us, size_bytes, maintained_us, "
                "pushes_since_maintenance) VALUES (:i, :a, 'default', :n, 'main', 0, 'ready', "
                "1, 1, 0, :s, 0, 0)"), {"i": repo_id, "a": account, "n": name, "s": size})
    migrate(engine)
    with engine.begin() as connection:
        totals = dict(connection.execute(text(
            "SELECT account_id, used_bytes FROM account_storage WHERE reserved_bytes = 0")).all())
        reserved = connection.execute(text("SELECT sum(reserved_bytes) FROM repos")).scalar_one()
    assert totals == {"acct1": 1234, "acct2": 5}
    assert reserved == 0
    engine.dispose()
