"""Content reads count against the repo's rate (shared with git), not the namespace's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitutil import Git
from tests.harness import Server, start_server
from tests.seed import seeded

CONTROL, GIT = 8, 12  # requests per window: the namespace's control plane, each repo's git


@pytest.fixture(scope="module")
def read_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("reads"), extra_env={
        "ARTIFACTD_RATE_LIMIT_CONTROL": f"{CONTROL}/1h", "ARTIFACTD_RATE_LIMIT_GIT": f"{GIT}/1h",
    })
    yield server
    server.stop()


def test_reads_use_the_per_repo_rate(read_server: Server, tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    # Two creates of the namespace's 8 control-plane requests; each push uses 2 git requests.
    first, _ = seeded(read_server, git, tmp_path / "a", "first")
    second, _ = seeded(read_server, git, tmp_path / "b", "second")
    with read_server.client() as c:
        def read(name: str) -> int:
            return c.get(f"/repos/{name}/file", params={"ref": "main", "path": "README.md"}).status_code

        # Ten reads of each repo: more than the namespace's whole budget, within each repo's.
        assert [read("first") for _ in range(GIT - 2)] == [200] * (GIT - 2)
        assert [read("second") for _ in range(GIT - 2)] == [200] * (GIT - 2)
        # The repo's budget is shared with its git requests and runs out for that repo only.
        refused = c.get("/repos/first/file", params={"ref": "main", "path": "README.md"})
        assert refused.status_code == 429, refused.text
        assert refused.json()["errors"][0]["code"] == 11060 and refused.headers["retry-after"]
        # The namespace's control-plane budget is untouched by the reads.
        assert c.get("/repos/first").status_code == 200
        # Probing names that do not exist is charged to the namespace.
        statuses = [c.get(f"/repos/missing-{i}/file", params={"ref": "main", "path": "x"}).status_code
                    for i in range(CONTROL)]
        assert statuses[-1] == 429 and set(statuses[:2]) == {404}
    assert first.name == "first" and second.name == "second"
