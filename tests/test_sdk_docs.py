"""docs/sdk.md and the README run: every ```python block, in order, against a real server.

Only the spec's GitHub URL changes: it points at a local smart-HTTP source (the test server
may import from loopback), as the README test changes only the host.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest

from artifactd import Artifacts
from tests.clientutil import git_source, make_source_repo
from tests.harness import Server

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "sdk.md", ROOT / "README.md")  # run in this order, in one namespace
GITHUB = "https://github.com/cloudflare/workers-sdk"


def python_blocks() -> list[str]:
    return [block for doc in DOCS
            for block in re.findall(r"^```python\n(.*?)^```$", doc.read_text(), re.S | re.M)]


def test_the_doc_has_the_spec_examples() -> None:
    text = "\n".join(python_blocks())
    for name in ("create_repo", "get_repo_handle", "list_repos", "import_from_github", "delete_repo",
                 "get_remote_url", "mint_read_token", "list_repo_tokens", "revoke_token", "fork_repo",
                 "authenticated_remote", "AsyncArtifacts", "ASGITransport"):
        assert name in text, name


def test_sdk_doc_examples_run(import_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    namespace = f"docs-{os.urandom(3).hex()}"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("")
    for key in [k for k in os.environ if k.startswith(("ARTIFACTD_", "GIT_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    monkeypatch.setenv("ARTIFACTD_URL", import_server.url)
    monkeypatch.setenv("ARTIFACTD_ACCOUNT_ID", import_server.account_id)
    monkeypatch.setenv("ARTIFACTD_API_TOKEN", import_server.token)
    monkeypatch.setenv("ARTIFACTD_NAMESPACE", namespace)
    monkeypatch.chdir(tmp_path)
    make_source_repo(tmp_path / "git", tmp_path / "sources", "workers-sdk",
                     {"README.md": "# workers-sdk\n", "packages/wrangler/package.json": "{}\n"})
    scope: dict[str, object] = {"__name__": "docs_sdk"}
    with git_source(tmp_path / "sources") as source:
        for index, block in enumerate(python_blocks(), start=1):
            code = block.replace(GITHUB, f"{source}/workers-sdk.git")
            exec(compile(code, f"docs python block {index}", "exec"), scope)
    out = capsys.readouterr().out
    with contextlib.closing(scope["artifacts"]) as artifacts:  # type: ignore[type-var]
        assert isinstance(artifacts, Artifacts)
    assert "starter-repo http://" in out
    assert "True\nFalse\n" in out  # revoke by plaintext, then by id
    assert "# workers-sdk" in out
    assert "task-1 -> task-1: done" in out and "task-3 -> task-3: done" in out

    with Artifacts(import_server.url, import_server.account_id, import_server.token, namespace) as check:
        names = {r.name for r in check.iter_repos()}
        assert names >= {"starter-repo", "starter-repo-copy", "workers-sdk", "sandbox-42", "task-7",
                         "async-repo", "baseline", "task-1", "task-2", "task-3"}
        assert check.get("workers-sdk").source is not None
        assert check.get("task-2").file("ANSWER.md").startswith(b"task-2: done")
