"""``GET /healthz`` and ``GET /readyz``: unauthenticated, and readiness names the failed check."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Server, start_server


def test_healthz_answers_without_credentials(server: Server) -> None:
    r = httpx.get(f"{server.url}/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["cache-control"] == "no-store"


def test_readyz_reports_every_check(server: Server) -> None:
    r = httpx.get(f"{server.url}/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert [(c["name"], c["ok"], c["detail"]) for c in body["checks"]] == [
        ("database", True, None), ("migrations", True, None), ("data_dir", True, None),
        ("git", True, None),
    ]


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: its tests break readiness (and restore it), and it
    allows only two control-plane requests per hour."""
    server = start_server(tmp_path_factory.mktemp("data-health"),
                          extra_env={"ARTIFACTD_RATE_LIMIT_CONTROL": "2/1h"})
    yield server
    server.stop()


def test_health_is_not_rate_limited(own_server: Server) -> None:
    """A load balancer polling readiness never uses up the control plane's budget."""
    for _ in range(5):
        assert httpx.get(f"{own_server.url}/readyz").status_code == 200
        assert httpx.get(f"{own_server.url}/healthz").status_code == 200
    with own_server.client() as c:
        assert c.get("/repos").status_code == 200  # the budget is untouched


def _failed(server: Server) -> list[tuple[str, str]]:
    r = httpx.get(f"{server.url}/readyz")
    body = r.json()
    assert (r.status_code == 503) == (body["status"] == "unavailable")
    return [(c["name"], c["detail"]) for c in body["checks"] if not c["ok"]]


def test_readyz_fails_when_the_database_is_behind_the_migrations(own_server: Server) -> None:
    database = own_server.data_dir / "artifactd.db"
    with sqlite3.connect(database) as db:
        (head,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        db.execute("UPDATE alembic_version SET version_num = '0001'")
    failed = _failed(own_server)
    assert [name for name, _ in failed] == ["migrations"]
    assert "0001" in failed[0][1] and head in failed[0][1]
    assert httpx.get(f"{own_server.url}/healthz").status_code == 200  # alive all the same
    with sqlite3.connect(database) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (head,))
    assert _failed(own_server) == []


def test_readyz_fails_when_the_data_dir_is_not_writable(own_server: Server) -> None:
    # Tests run as root, for whom permission bits do not count: put a file where the
    # server's staging directory is, so that nothing can be created in it.
    staging = own_server.data_dir / "tmp"
    staging.rename(own_server.data_dir / "tmp.moved")
    staging.write_text("not a directory")
    try:
        failed = _failed(own_server)
        assert failed == [("data_dir", "the data directory is not writable")]
    finally:
        staging.unlink()
        (own_server.data_dir / "tmp.moved").rename(staging)
    assert _failed(own_server) == []
