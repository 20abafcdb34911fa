"""No hot-path work proportional to the number of repos (issue: flat at scale).

The same operations run against two real SQLite metadata stores, one holding SMALL repos in
the account and one holding LARGE (25x more), through the real app served by uvicorn on a
free port, with the real git CLI for the push. SQLite's progress handler counts the virtual
machine instructions every statement executes: a full or per-account scan of the repos
table grows with the table, an index lookup grows with its depth only. Counting work instead
of timing it keeps the test deterministic on a loaded host.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import event

from artifactd.config import Settings
from artifactd.http.app import create_app
from artifactd.services.access import accounts
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from tests.gitutil import Git
from tests.harness import free_port

SMALL, LARGE = 200, 5_000
TICK = 10  # VM instructions per progress-handler call
RUNS = 3  # each operation's count is the least of this many runs (first-use effects aside)


@dataclass
class Instance:
    backend: Backend
    server: uvicorn.Server
    thread: threading.Thread
    url: str
    account_id: str
    token: str
    ticks: list[int] = field(default_factory=lambda: [0])

    @property
    def ns_url(self) -> str:
        return f"{self.url}/client/v4/accounts/{self.account_id}/artifacts/namespaces/default"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.ns_url, timeout=60,
                            headers={"Authorization": f"Bearer {self.token}"})

    def work(self, operation: Callable[[], None]) -> int:
        """SQL VM instructions (in TICKs) that ``operation`` makes the server execute."""
        best = None
        for _ in range(RUNS):
            self.ticks[0] = 0
            operation()
            best = self.ticks[0] if best is None else min(best, self.ticks[0])
        assert best is not None
        return best


def seed(backend: Backend, account_id: str, count: int) -> None:
    backend.meta.ensure_namespace(account_id, "default", now_us())
    base = now_us() - count * 1000
    rows: list[dict[str, Any]] = []
    for i in range(count):
        ts = base + i * 1000
        rows.append({
            "id": uuid.uuid4().hex, "account_id": account_id, "namespace": "default",
            "name": f"seed-{i:07d}", "description": None, "default_branch": "main",
            "read_only": False, "source": None, "status": "ready", "status_reason": None,
            "created_us": ts, "updated_us": ts, "last_push_us": 0, "size_bytes": 0,
            "maintained_us": 0, "pushes_since_maintenance": 0, "import_spec": None,
        })
    backend.meta.bulk_insert_repos(rows)


def start(data_dir: Path, count: int) -> Instance:
    port = free_port()
    settings = Settings(data_dir=str(data_dir), port=port, analytics_enabled=False,
                        maintenance_interval=3600.0, rate_limit_control="1000000/10s",
                        rate_limit_git="1000000/10s")
    backend = Backend.open(settings)
    row, token = accounts.create_api_token(backend, None, "edit")
    seed(backend, row.account_id, count)
    ticks = [0]

    def count_ticks() -> int:
        ticks[0] += 1
        return 0

    @event.listens_for(backend.meta.engine, "connect")
    def _instrument(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_progress_handler(count_ticks, TICK)

    backend.meta.engine.dispose()  # every connection from here on is instrumented
    server = uvicorn.Server(uvicorn.Config(create_app(backend), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    return Instance(backend, server, thread, f"http://127.0.0.1:{port}", row.account_id, token,
                    ticks)


def stop(instance: Instance) -> None:
    instance.server.should_exit = True
    instance.thread.join(timeout=30)


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Instance]]:
    started = {n: start(tmp_path_factory.mktemp(f"flat-{n}"), n) for n in (SMALL, LARGE)}
    yield started
    for instance in started.values():
        stop(instance)


def deep_cursor(instance: Instance, count: int) -> str:
    """A list cursor half-way through the seeded repos (newest first)."""
    page = instance.backend.meta.list_repos(
        instance.account_id, "default", sort="created_at", descending=True, limit=1,
        after=(now_us() - (count // 2) * 1000, "~"), search=None,
    )
    row = page[0]
    return instance.backend.cursors.encode(
        {"s": "created_at", "d": "desc", "q": "", "v": row.created_us, "i": row.id})


def operations(instance: Instance, count: int, git: Git, work: Path) -> dict[str, Callable[[], None]]:
    client = instance.client()
    names = iter(f"op-{i}" for i in range(10_000))
    created = client.post("/repos", json={"name": "pushed"}).json()["result"]
    remote, token = created["remote"], created["token"]
    header = f"http.extraHeader=Authorization: Bearer {token}"
    git.new_work(work, {"README.md": "# flat\n"})
    git.run("-c", header, "push", "-q", remote, "HEAD:refs/heads/main", cwd=work)
    cursor = deep_cursor(instance, count)
    pushes = iter(range(10_000))

    def ok(response: httpx.Response) -> None:
        assert response.status_code in (200, 202), response.text

    def create() -> None:
        ok(client.post("/repos", json={"name": next(names)}))

    def push() -> None:
        git.commit_files(work, {"README.md": f"push {next(pushes)}\n"}, "another")
        git.run("-c", header, "push", "-q", remote, "HEAD:refs/heads/main", cwd=work)

    def fork() -> None:
        ok(client.post("/repos/pushed/fork", json={"name": next(names)}))

    def delete() -> None:
        name = next(names)
        ok(client.post("/repos", json={"name": name}))
        ok(client.delete(f"/repos/{name}"))

    return {
        "create": create,
        "get": lambda: ok(client.get(f"/repos/seed-{count // 3:07d}")),
        "list first page": lambda: ok(client.get("/repos", params={"limit": 50})),
        "list deep cursor": lambda: ok(client.get("/repos", params={"limit": 50, "cursor": cursor})),
        "token create": lambda: ok(client.post("/tokens", json={"repo": "pushed", "scope": "read"})),
        "push": push,
        "fork": fork,
        "create and delete": delete,
        "content read": lambda: ok(client.get("/repos/pushed/file",
                                              params={"ref": "main", "path": "README.md"})),
    }


def test_no_operation_costs_more_with_more_repos(instances: dict[int, Instance], tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    work = {n: operations(instances[n], n, git, tmp_path / f"work-{n}") for n in (SMALL, LARGE)}
    report, grew = [], []
    for name in work[SMALL]:
        small = instances[SMALL].work(work[SMALL][name])
        large = instances[LARGE].work(work[LARGE][name])
        report.append(f"{name}: {small} -> {large} ticks of {TICK} instructions")
        # An index lookup gets at most a level or two deeper at 25x the rows; a scan over
        # the account's repos costs 25x as much.
        if large > 2 * small + 20:
            grew.append(name)
    assert not grew, f"work grew with the number of repos for {grew}:\n" + "\n".join(report)
