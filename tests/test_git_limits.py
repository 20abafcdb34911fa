"""Storage and rate limits on the git data plane, with --workers 2 (limits hold across workers)."""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gitutil import Git
from tests.harness import Server, start_server

MAX_REPO_BYTES = 150_000
GIT_RATE = 12


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("git-limits"),
        extra_env={"ARTIFACTD_MAX_REPO_BYTES": str(MAX_REPO_BYTES),
                   "ARTIFACTD_RATE_LIMIT_GIT": f"{GIT_RATE}/60s",
                   "ARTIFACTD_MAINTENANCE_INTERVAL": "0"},
        args=("--workers", "2"),
    )
    yield server
    server.stop()


def make_repo(server: Server, name: str) -> dict:
    with server.client() as c:
        response = c.post("/repos", json={"name": name})
        assert response.status_code == 200, response.text
        return response.json()["result"]


def repo_info(server: Server, name: str) -> dict:
    with server.client() as c:
        return c.get(f"/repos/{name}").json()["result"]


def bearer(token: str) -> str:
    return f"http.extraHeader=Authorization: Bearer {token}"


def pack_size(git: Git, work: Path, new: str, old: str) -> int:
    """Bytes of the pack ``git push`` sends for ``old..new`` (same command, same input).

    Compression is off (here and in the pushes) so that pack size grows one byte per blob
    byte and a pack of any exact size can be made.
    """
    result = subprocess.run(
        ["git", "-c", "pack.compression=0", "pack-objects", "--all-progress-implied", "--revs", "--stdout", "--thin",
         "--delta-base-offset", "-q"],
        input=f"{new}\n^{old}\n".encode(), cwd=work, env=git.env, capture_output=True, check=True,
    )
    return len(result.stdout)


def commit_blob(git: Git, work: Path, size: int, seed: bytes) -> str:
    """Replace the last commit with one adding ``size`` incompressible bytes."""
    data = (seed * (size // len(seed) + 1))[:size]
    (work / "blob.bin").write_bytes(data)
    git.run("add", "blob.bin", cwd=work)
    git.run("commit", "-q", "--amend", "--no-edit", "--allow-empty", cwd=work)
    return git.out("rev-parse", "HEAD", cwd=work)


def git_dir(server: Server, repo: dict) -> Path:
    rid = repo["id"]
    return server.data_dir / "repos" / rid[:2] / f"{rid}.git"


def test_push_past_the_limit_by_one_byte_is_refused(limited: Server, tmp_path: Path) -> None:
    repo = make_repo(limited, "near-full")
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    git.new_work(work, {"README.md": "hello\n"})
    git.run("-c", bearer(repo["token"]), "push", "-q", repo["remote"], "HEAD:main", cwd=work)
    base = git.out("rev-parse", "HEAD", cwd=work)
    left = MAX_REPO_BYTES - repo_info(limited, "near-full")["size"]
    git.run("commit", "-q", "--allow-empty", "-m", "big", cwd=work)
    seed = os.urandom(1 << 20)
    # Find the blob size whose push sends exactly left + 1 bytes of pack.
    size = left - 300
    for _ in range(20):
        head = commit_blob(git, work, size, seed)
        pack = pack_size(git, work, head, base)
        if pack == left + 1:
            break
        size += left + 1 - pack
    assert pack == left + 1, (pack, left)

    refused = git.run("-c", "pack.compression=0", "-c", bearer(repo["token"]), "push",
                      repo["remote"], "HEAD:main", cwd=work, check=False)
    assert refused.returncode != 0
    assert "maximum allowed size" in refused.stderr, refused.stderr
    heads = git.out("-c", bearer(repo["token"]), "ls-remote", repo["remote"], "refs/heads/main")
    assert heads.split()[0] == base  # no ref moved
    fsck = subprocess.run(["git", f"--git-dir={git_dir(limited, repo)}", "fsck", "--strict"],
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr

    # A pack that fits with its index fits. The limit counts what the push adds on disk, the
    # pack and the index git writes beside it (every push is kept as a pack), so the pack
    # itself must leave room for the index: about 1 KiB for a handful of objects.
    room = 4096
    head = commit_blob(git, work, size - room, seed)
    assert pack_size(git, work, head, base) == left + 1 - room
    git.run("-c", "pack.compression=0", "-c", bearer(repo["token"]), "push", "-q", repo["remote"], "HEAD:main", cwd=work)
    assert git.out("-c", bearer(repo["token"]), "ls-remote", repo["remote"],
                   "refs/heads/main").split()[0] == head


def test_storage_limit_event_and_repo_stays_usable(limited: Server, tmp_path: Path) -> None:
    repo = make_repo(limited, "overflow")
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    git.new_work(work, {"README.md": "hello\n"})
    git.run("-c", bearer(repo["token"]), "push", "-q", repo["remote"], "HEAD:main", cwd=work)
    git.commit_files(work, {"big.bin": os.urandom(MAX_REPO_BYTES)}, "too big")
    refused = git.run("-c", bearer(repo["token"]), "push", repo["remote"], "HEAD:main",
                      cwd=work, check=False)
    assert refused.returncode != 0 and "maximum allowed size" in refused.stderr
    git.run("reset", "-q", "--hard", "HEAD~1", cwd=work)
    git.commit_files(work, {"small.txt": "fits\n"}, "small")
    git.run("-c", bearer(repo["token"]), "push", "-q", repo["remote"], "HEAD:main", cwd=work)
    clone = tmp_path / "clone"
    git.run("-c", bearer(repo["token"]), "clone", "-q", repo["remote"], str(clone))
    assert (clone / "small.txt").read_text() == "fits\n"
    query = """query($a: String!) { viewer { accounts(filter: {accountTag: $a}) {
      artifactsEventsAdaptiveGroups(limit: 5, filter: {eventType: "storageLimitReached",
                                                       repositoryName: "overflow"}) {
        count dimensions { eventKind errorMessage } } } } }"""
    deadline = time.monotonic() + 10
    while True:
        body = httpx.post(f"{limited.url}/client/v4/graphql",
                          headers={"Authorization": f"Bearer {limited.token}"},
                          json={"query": query, "variables": {"a": limited.account_id}}).json()
        groups = body["data"]["viewer"]["accounts"][0]["artifactsEventsAdaptiveGroups"]
        if groups or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert groups and groups[0]["count"] == 1
    assert groups[0]["dimensions"]["eventKind"] == "error"
    assert "Storage limit" in groups[0]["dimensions"]["errorMessage"]


def test_huge_declared_push_is_refused_before_reading(limited: Server) -> None:
    """A 3 GB push when little is left: refused from its Content-Length, at once."""
    repo = make_repo(limited, "declared")
    connection = http.client.HTTPConnection("127.0.0.1", limited.port, timeout=10)
    path = repo["remote"].split(str(limited.port), 1)[1] + "/git-receive-pack"
    connection.putrequest("POST", path)
    connection.putheader("Authorization", f"Bearer {repo['token']}")
    connection.putheader("Content-Type", "application/x-git-receive-pack-request")
    connection.putheader("Content-Length", str(3 * 10**9))
    connection.endheaders()
    connection.send(b"0000")  # a few bytes of a body that never comes
    started = time.monotonic()
    response = connection.getresponse()
    text = response.read().decode()
    assert time.monotonic() - started < 5
    assert response.status == 413 and "Storage limit reached" in text
    connection.close()


def test_git_rate_limit_per_repo(limited: Server, tmp_path: Path) -> None:
    repo = make_repo(limited, "hammered")
    other = make_repo(limited, "quiet")
    url = repo["remote"] + "/info/refs?service=git-upload-pack"
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.2)
    headers = {"Authorization": f"Bearer {repo['token']}"}
    statuses = [httpx.get(url, headers=headers).status_code for _ in range(GIT_RATE + 5)]
    assert statuses == [200] * GIT_RATE + [429] * 5
    refused = httpx.get(url, headers=headers)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "Rate limit exceeded" in refused.text
    git = Git(tmp_path / "home")
    clone = git.run("-c", bearer(repo["token"]), "clone", repo["remote"], str(tmp_path / "c"), check=False)
    assert clone.returncode != 0 and "Rate limit exceeded" in clone.stderr
    # Another repo has its own budget.
    assert httpx.get(other["remote"] + "/info/refs?service=git-upload-pack",
                     headers={"Authorization": f"Bearer {other['token']}"}).status_code == 200
    metrics = httpx.get(f"{limited.url}/metrics").text
    assert 'artifactd_rate_limited_total{kind="git"}' in metrics


def test_git_metrics(limited: Server, tmp_path: Path) -> None:
    repo = make_repo(limited, "metered")
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    git.new_work(work, {"data.bin": os.urandom(20_000)})
    git.run("-c", bearer(repo["token"]), "push", "-q", repo["remote"], "HEAD:main", cwd=work)
    git.run("-c", bearer(repo["token"]), "clone", "-q", repo["remote"], str(tmp_path / "c"))

    assert limited.metric('artifactd_git_bytes_sent_total{service="git-upload-pack"}') > 20_000
    assert limited.metric('artifactd_git_bytes_received_total{service="git-receive-pack"}') > 20_000
    assert limited.metric("artifactd_git_processes ") == 0  # every git process was reaped
