"""Who may clone and push: the auth matrix, with git's own output and the raw HTTP answers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.gitutil import Git, Repo, basic_header, basic_remote, bearer, create_repo
from tests.harness import Server

CASES = ["none", "read", "write", "expired", "revoked", "other-repo", "read-only-repo"]


@pytest.fixture(scope="module")
def seeded(sqlite_server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Repo, Repo, Git, Path]:
    """A repo with one commit, and a second repo whose tokens are the "other repo" case."""
    tmp = tmp_path_factory.mktemp("auth")
    git = Git(tmp / "home")
    repo = create_repo(sqlite_server, f"auth-main-{tmp.name[-6:]}")
    work = tmp / "work"
    git.new_work(work)
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=work)
    other = create_repo(sqlite_server, f"auth-other-{tmp.name[-6:]}")
    return repo, other, git, work


def credential_for(
    case: str, repo: Repo, other: Repo, server: Server, unique: str
) -> tuple[Repo, str | None]:
    """(the repo the request goes to, the token it carries) for one row of the matrix."""
    if case == "none":
        return repo, None
    if case in ("read", "write"):
        return repo, repo.mint(case)["plaintext"]
    if case in ("expired", "revoked"):
        minted = repo.mint("write")
        if case == "expired":
            repo.expire_token(minted["id"])
        else:
            with server.client() as c:
                assert c.delete(f"/tokens/{minted['id']}").status_code == 200
        return repo, minted["plaintext"]
    if case == "other-repo":
        return repo, other.mint("write")["plaintext"]
    read_only = create_repo(server, f"ro-{unique}", read_only=True)
    return read_only, read_only.token


EXPECT = {  # case: (clone allowed, push allowed)
    "none": (False, False),
    "read": (True, False),
    "write": (True, True),
    "expired": (False, False),
    "revoked": (False, False),
    "other-repo": (False, False),
    "read-only-repo": (True, False),
}


@pytest.mark.parametrize("form", ["bearer", "basic"])
@pytest.mark.parametrize("case", CASES)
def test_auth_matrix(sqlite_server: Server, seeded, tmp_path: Path, unique_name: str,
                     case: str, form: str) -> None:
    repo, other, git, work = seeded
    target, token = credential_for(case, repo, other, sqlite_server, unique_name)
    can_clone, can_push = EXPECT[case]
    if token is None:
        url, opts = target.remote, []
    elif form == "bearer":
        url, opts = target.remote, ["-c", bearer(token)]
    else:
        url, opts = basic_remote(target.remote, token), []
    before = target.refs()

    cloned = git.run(*opts, "clone", url, str(tmp_path / "c"), check=False)
    assert (cloned.returncode == 0) == can_clone, cloned.stderr
    if not can_clone:
        if case == "other-repo":
            assert "not found" in cloned.stderr
        elif form == "bearer" and case in ("expired", "revoked"):
            # The reason, not a credential prompt git cannot answer.
            # (the matrix's expired token keeps its old ?expires= suffix: "Invalid repo token")
            reason = "remote: Repo token is revoked" if case == "revoked" else "remote: "
            assert reason in cloned.stderr, cloned.stderr
            assert "Username" not in cloned.stderr
        else:
            assert "Authentication failed" in cloned.stderr or "could not read Username" in cloned.stderr

    pushed = git.run(*opts, "push", url, "HEAD:refs/heads/attempt", cwd=work, check=False)
    assert (pushed.returncode == 0) == can_push, pushed.stderr
    after = target.refs()
    if can_push:
        assert "refs/heads/attempt" in after
    else:
        assert after == before
        if case == "read":
            assert "remote: This repo token has read scope" in pushed.stderr
        if case == "read-only-repo":
            assert "read-only: pushes are refused" in pushed.stderr
    repo.fsck()


def _get(url: str, auth: str | None) -> httpx.Response:
    headers = {"Authorization": auth} if auth else {}
    return httpx.get(f"{url}/info/refs", params={"service": "git-upload-pack"}, headers=headers)


def test_http_answers(sqlite_server: Server, seeded, unique_name: str) -> None:
    repo, other, _git, _work = seeded
    none = _get(repo.remote, None)
    assert none.status_code == 401
    assert none.headers["www-authenticate"].startswith('Basic realm="artifactd"')
    assert none.headers["content-type"].startswith("text/plain")

    # A token for another repo gets exactly the missing-repo answer.
    missing_url = repo.remote.replace(repo.name, f"missing-{unique_name}")
    other_token = other.mint("write")["plaintext"]
    wrong = _get(repo.remote, f"Bearer {other_token}")
    missing = _get(missing_url, f"Bearer {other_token}")
    assert (wrong.status_code, wrong.text, wrong.headers["content-type"]) == (
        missing.status_code, missing.text, missing.headers["content-type"])
    assert wrong.status_code == 404 and wrong.text == "Repository not found\n"

    # Deleted repos are missing repos too.
    doomed = create_repo(sqlite_server, f"doomed-{unique_name}")
    with sqlite_server.client() as c:
        assert c.delete(f"/repos/{doomed.name}").status_code == 202
    gone = _get(doomed.remote, f"Bearer {other_token}")
    assert (gone.status_code, gone.text) == (404, "Repository not found\n")

    expired = repo.mint("read")
    repo.expire_token(expired["id"])
    # Without the suffix: the test moved the stored expiry, so the old suffix looks tampered.
    r = _get(repo.remote, f"Bearer {expired['plaintext'].split('?')[0]}")
    # A Bearer token comes from http.extraHeader: 403 with the reason, which git prints.
    assert r.status_code == 403 and r.text == "Repo token is expired\n"
    assert "www-authenticate" not in r.headers
    r = _get(repo.remote, basic_header(expired["plaintext"].split("?")[0]))
    assert r.status_code == 401 and r.text == "Repo token is expired\n"
    assert "www-authenticate" in r.headers  # Basic: credential helpers may retry
    revoked = repo.mint("read")
    with sqlite_server.client() as c:
        c.delete(f"/tokens/{revoked['id']}")
    r = _get(repo.remote, basic_header(revoked["plaintext"].split("?")[0]))
    assert r.status_code == 401 and r.text == "Repo token is revoked\n"

    # Every accepted form of a good token.
    good = repo.mint("read")["plaintext"]
    secret = good.split("?")[0]
    for auth in (f"Bearer {good}", f"Bearer {secret}", basic_header(secret), basic_header(good),
                 basic_header(secret.removeprefix("art_v1_"), user="any-user")):
        assert _get(repo.remote, auth).status_code == 200, auth[:12]

    read = _get(repo.remote, f"Bearer {good}")
    assert read.status_code == 200
    push = httpx.get(f"{repo.remote}/info/refs", params={"service": "git-receive-pack"},
                     headers={"Authorization": f"Bearer {good}"})
    assert push.status_code == 403 and "read scope" in push.text
    post = httpx.post(f"{repo.remote}/git-receive-pack", content=b"0000", headers={
        "Authorization": f"Bearer {good}", "Content-Type": "application/x-git-receive-pack-request"})
    assert post.status_code == 403


def test_api_token_is_not_a_repo_token(sqlite_server: Server, seeded) -> None:
    repo, *_ = seeded
    r = _get(repo.remote, f"Bearer {sqlite_server.token}")
    assert r.status_code == 403 and r.text == "Invalid repo token\n"
    r = _get(repo.remote, basic_header(sqlite_server.token))
    assert r.status_code == 401 and r.text == "Invalid repo token\n"


def test_git_prints_why_a_bearer_token_is_refused(sqlite_server: Server, seeded, tmp_path: Path,
                                                   unique_name: str) -> None:
    """Issue 11: with the spec's `http.extraHeader` form, git shows the server's reason
    instead of asking for a username it cannot use (prompts are off, as in CI)."""
    repo, other, git, _work = seeded
    expired = repo.mint("read")
    repo.expire_token(expired["id"])
    revoked = repo.mint("read")
    with sqlite_server.client() as c:
        assert c.delete(f"/tokens/{revoked['id']}").status_code == 200
    unknown = "art_v1_" + "ab" * 20
    cases = {
        "expired": (expired["plaintext"].split("?")[0], "remote: Repo token is expired"),
        "revoked": (revoked["plaintext"], "remote: Repo token is revoked"),
        "malformed": ("not-a-token", "remote: Invalid repo token"),
        "unknown": (unknown, "remote: Invalid repo token"),
        "other-repo": (other.mint("read")["plaintext"], "remote: Repository not found"),
    }
    for case, (token, reason) in cases.items():
        for n, args in enumerate((["clone", repo.remote, str(tmp_path / f"c-{case}")],
                                  ["ls-remote", repo.remote],
                                  ["push", repo.remote, "HEAD:refs/heads/x"])):
            result = git.run("-c", bearer(token), *args, cwd=_work, check=False)
            assert result.returncode != 0, (case, n)
            assert reason in result.stderr, (case, result.stderr)
            assert "Username" not in result.stderr, (case, result.stderr)
    # A token for another repo gets exactly the answer of a missing repo.
    missing = repo.remote.replace(repo.name, f"missing-{unique_name}")
    token = cases["other-repo"][0]
    wrong = git.run("-c", bearer(token), "ls-remote", repo.remote, check=False).stderr
    gone = git.run("-c", bearer(token), "ls-remote", missing, check=False).stderr
    assert wrong.replace(repo.remote, "URL") == gone.replace(missing, "URL")
    # No credentials at all: still 401 + WWW-Authenticate, so credential helpers get asked.
    none = git.run("ls-remote", repo.remote, check=False)
    assert "could not read Username" in none.stderr


def test_docs_auth_examples_run(sqlite_server: Server, seeded, tmp_path: Path) -> None:
    """docs/git.md's authentication block, verbatim, on this server's http:// remote."""
    repo, _other, git, _work = seeded
    text = (Path(__file__).resolve().parent.parent / "docs" / "git.md").read_text()
    section = text.split("## Authentication", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    env = {**git.env, "ARTIFACTS_TOKEN": repo.mint("read")["plaintext"], "ARTIFACTS_REMOTE": repo.remote}
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block.group(1)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for clone in ("env-clone", "header-clone", "basic-clone"):
        assert (tmp_path / clone / "README.md").exists(), clone
    # The environment form leaves no token in the clone's config.
    assert "art_v1_" not in (tmp_path / "env-clone" / ".git" / "config").read_text()
