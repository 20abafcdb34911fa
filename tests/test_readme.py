"""The README quickstart runs verbatim against a real server (only the host:port changes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.gitutil import git_env
from tests.harness import Server

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_blocks() -> tuple[str, str]:
    text = README.read_text()
    exports = next(
        block for block in re.findall(r"```sh\n(.*?)```", text, re.S) if "export ARTIFACTS_BASE_URL" in block
    )
    quickstart = re.search(
        r"<!-- quickstart:start -->\n```sh\n(.*?)```\n<!-- quickstart:end -->", text, re.S
    )
    assert quickstart, "README quickstart markers are missing"
    return exports, quickstart.group(1)


def json_documents(text: str) -> list[dict]:
    """The JSON envelopes curl printed, skipping the lines git printed between them."""
    decoder = json.JSONDecoder()
    docs, index = [], 0
    while (start := text.find('{"result"', index)) != -1:
        doc, index = decoder.raw_decode(text, start)
        docs.append(doc)
    return docs


def test_readme_quickstart_verbatim(sqlite_server: Server, tmp_path: Path) -> None:
    exports, quickstart = readme_blocks()
    # A namespace of its own: other tests on this shared server make a `starter-repo` in
    # `default` too (the ArtifactFS guide's name).
    namespace = f"readme-{os.urandom(3).hex()}"
    exports = (
        exports.replace('ARTIFACTS_NAMESPACE="default"', f'ARTIFACTS_NAMESPACE="{namespace}"')
        .replace("<account_id from api-token create>", sqlite_server.account_id)
        .replace("<token from api-token create>", sqlite_server.token)
        .replace("127.0.0.1:8787", f"127.0.0.1:{sqlite_server.port}")
    )
    script = "set -euo pipefail\n" + exports + quickstart
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env=git_env(tmp_path / "home"))
    assert result.returncode == 0, result.stderr
    # git log --oneline -1 in the clone shows the pushed commit; both clones have the file.
    assert re.search(r"^[0-9a-f]{7,} Initial commit$", result.stdout, re.M), result.stdout
    for clone in ("artifacts-clone", "artifacts-clone-2"):
        assert (tmp_path / clone / "README.md").read_text() == "# Artifacts demo\n"
    repo, tokens, revoked, deleted = json_documents(result.stdout)
    for doc in (repo, tokens, revoked, deleted):
        assert doc["success"] is True and doc["errors"] == [] and doc["messages"] == []
    assert repo["result"]["name"] == "starter-repo"
    assert repo["result"]["remote"].endswith(f"/git/{sqlite_server.account_id}/{namespace}/starter-repo.git")
    assert {t["scope"] for t in tokens["result"]} == {"read", "write"}
    assert tokens["result_info"]["total_count"] == 2
    read_id = next(t["id"] for t in tokens["result"] if t["scope"] == "read")
    assert revoked["result"] == {"id": read_id}
    assert deleted["result"] == {"id": repo["result"]["id"]}
