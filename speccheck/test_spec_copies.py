"""Checks against the spec itself, run by `.ci/run` only when `../shared/spec` is beside the
checkout (users' clones do not have it; the main suite keeps its own copies in the repo).

- The analytics example queries that tests/test_analytics.py runs are the spec's, verbatim.
- Every command of the README quickstart (which tests/test_readme.py runs against a real
  server) is a command of the spec's walkthrough, verbatim up to whitespace, except for the
  documented self-hosting differences below.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT.parent / "shared" / "spec"

if not SPEC.is_dir():  # pragma: no cover - only .ci/run calls this module, and only with the spec
    pytest.fail(f"the spec is not beside this checkout ({SPEC})", pytrace=False)

# What the README changes on purpose, as (README text, spec text): a local server has no TLS
# by default (the auth remote keeps the remote's scheme), the spec's placeholder token id
# becomes the id the walkthrough minted, and the
# second clone needs a directory of its own.
README_SUBSTITUTIONS = [
    # The remote's own scheme (http:// on a local server), where the spec writes https://.
    ("${ARTIFACTS_REMOTE%%://*}://x:${ARTIFACTS_TOKEN_SECRET}@${ARTIFACTS_REMOTE#*://}",
     "https://x:${ARTIFACTS_TOKEN_SECRET}@${ARTIFACTS_REMOTE#https://}"),
    ("/tokens/$TOKEN_ID", "/tokens/0123456789abcdef"),
    ("artifacts-clone-2", "artifacts-clone"),
]
# README glue with no spec counterpart: it keeps the id of the token it minted, and hands
# the push its token through git's environment (GIT_CONFIG_*) instead of `-c` on the command
# line, where `ps` shows it to other users (docs/git.md); the clone below keeps the spec's
# `-c http.extraHeader=...` form, so both are run.
README_ONLY = {
    "TOKEN_ID=$(printf '%s' \"$TOKEN_JSON\" | jq -r '.result.id')",
    "export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=http.extraHeader",
    'export GIT_CONFIG_VALUE_0="Authorization: Bearer $ARTIFACTS_TOKEN"',
    "unset GIT_CONFIG_COUNT GIT_CONFIG_KEY_0 GIT_CONFIG_VALUE_0",
}
# The spec's push with the token on the command line, which the README runs from the
# environment form above.
README_SUBSTITUTIONS.append(
    ("git push -u origin main",
     'git -c http.extraHeader="Authorization: Bearer $ARTIFACTS_TOKEN" push -u origin main'))


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def spec_commands() -> str:
    """All the spec's text (its REST reference has commands outside code fences), line
    continuations joined, whitespace collapsed."""
    texts = (path.read_text() for path in sorted(SPEC.glob("*.txt")))
    return "\n".join(squash(text.replace("\\\n", " ").replace("\\  ", " ")) for text in texts)


def readme_quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart:start -->\n```sh\n(.*?)```", text, re.S)
    assert block, "README quickstart markers are missing"
    joined = block.group(1).replace("\\\n", " ")
    return [squash(line) for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_analytics_queries_are_the_specs() -> None:
    spec = (SPEC / "002_dcc2cc68aae7d6d3.txt").read_text()
    expected = [squash(b) for b in re.findall(r"```\s*\n(query Artifacts\w+\(.*?)\n\s*```", spec, re.S)]
    copy = (ROOT / "tests" / "data" / "spec_analytics_queries.graphql").read_text()
    ours = [squash(b) for b in re.findall(r"^query Artifacts\w+\(.*?^\}$", copy, re.S | re.M)]
    assert len(expected) == 3
    assert ours == expected


def test_readme_quickstart_is_the_specs_walkthrough() -> None:
    corpus = spec_commands()
    missing = []
    for command in readme_quickstart_commands():
        if command in README_ONLY:
            continue
        wanted = command
        for ours, theirs in README_SUBSTITUTIONS:
            wanted = wanted.replace(ours, theirs)
        if squash(wanted) not in corpus:
            missing.append(command)
    assert not missing, "README commands not in the spec:\n" + "\n".join(missing)
