"""Every event type of the analytics dataset comes from a real operation.

``rateLimited`` and ``storageLimitReached`` need servers with small limits: they are produced
and queried in tests/test_limits.py and tests/test_git_limits.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.gitutil import Git
from tests.harness import Server


def event_counts(server: Server, namespace: str, expected: int) -> dict[str, int]:
    query = """query($a: String!, $ns: String!) { viewer { accounts(filter: {accountTag: $a}) {
      artifactsEventsAdaptiveGroups(limit: 50, filter: {repositoryNamespace: $ns},
                                    orderBy: [eventType_ASC]) {
        count dimensions { eventType eventKind } } } } }"""
    deadline = time.monotonic() + 10
    while True:
        body = httpx.post(f"{server.url}/client/v4/graphql",
                          headers={"Authorization": f"Bearer {server.token}"},
                          json={"query": query, "variables": {"a": server.account_id, "ns": namespace}}).json()
        groups = body["data"]["viewer"]["accounts"][0]["artifactsEventsAdaptiveGroups"]
        counts = {g["dimensions"]["eventType"]: g["count"] for g in groups}
        kinds = {g["dimensions"]["eventType"]: g["dimensions"]["eventKind"] for g in groups}
        if sum(counts.values()) >= expected or time.monotonic() > deadline:
            for event_type, kind in kinds.items():
                assert kind == ("error" if event_type.endswith(("Error", "Reached", "Limited")) else "action")
            return counts
        time.sleep(0.3)


def test_every_action_and_error_type(sqlite_server: Server, tmp_path: Path) -> None:
    server = sqlite_server
    ns = f"events-{int(time.time() * 1000) % 10**9}"
    base = server.ns_url(ns)
    git = Git(tmp_path / "home")
    with httpx.Client(headers={"Authorization": f"Bearer {server.token}"}, timeout=60) as c:
        parent = c.post(f"{base}/repos", json={"name": "parent"}).json()["result"]  # create
        work = tmp_path / "w"
        git.new_work(work, {"a.txt": "a\n"})
        header = f"http.extraHeader=Authorization: Bearer {parent['token']}"
        git.run("-c", header, "push", "-q", parent["remote"], "HEAD:main", cwd=work)  # push
        git.run("-c", header, "clone", "-q", parent["remote"], str(tmp_path / "c"))  # pull
        assert c.post(f"{base}/repos/parent/fork", json={"name": "child"}).status_code == 200  # fork
        assert c.delete(f"{base}/repos/child").status_code == 202  # delete
        assert c.get(f"{base}/repos/parent/file", params={"path": "nope.txt"}).status_code == 404  # clientError

        # serverError: the parent's object store is damaged on disk (a directory where an
        # object file belongs), so forking it fails inside the server.
        rid = parent["id"]
        objects = server.data_dir / "repos" / rid[:2] / f"{rid}.git" / "objects"
        (objects / "ab" / ("c" * 38)).mkdir(parents=True)
        broken = c.post(f"{base}/repos/parent/fork", json={"name": "child2"})
        assert broken.status_code == 500
        assert broken.json()["errors"][0] == {"code": 10400, "message": "Internal server error"}
        assert c.get(f"{base}/repos/child2").status_code == 404  # nothing half-created

    counts = event_counts(server, ns, expected=9)
    # clientError: the missing file, and the check that child2 was not created.
    assert counts == {"clientError": 2, "create": 1, "delete": 1, "fork": 1, "pull": 1, "push": 1,
                      "serverError": 1}, counts
