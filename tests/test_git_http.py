"""The git smart-HTTP data plane with the real git CLI against a real server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.gitutil import Git, Repo, basic_remote, bearer, create_repo, pkt, rpc
from tests.harness import Server, free_port

# -- the spec's walkthroughs, verbatim --------------------------------------------------------

# Steps 4 and 5 of spec 000 (get started, REST API) and the script of spec 003 (git client),
# copied command for command. Only the environment differs: the server speaks plain HTTP,
# so the remote it returns is https:// and the sealed git config maps https:// to http://.
SPEC_000_STEP_2 = r"""
CREATE_RESPONSE=$(curl --silent --request POST "$ARTIFACTS_BASE_URL/repos" \
  --header "Authorization: Bearer $CLOUDFLARE_API_TOKEN" \
  --header "Content-Type: application/json" \
  --data "{\"name\":\"$ARTIFACTS_REPO\"}")
export ARTIFACTS_REMOTE=$(printf '%s' "$CREATE_RESPONSE" | jq -r '.result.remote')
export ARTIFACTS_TOKEN=$(printf '%s' "$CREATE_RESPONSE" | jq -r '.result.token')
"""
SPEC_000_STEP_4 = r"""
mkdir artifacts-demo
cd artifacts-demo
git init -b main
printf '# Artifacts demo\n' > README.md
git add README.md
git commit -m "Initial commit"
git remote add origin "$ARTIFACTS_REMOTE"
git -c http.extraHeader="Authorization: Bearer $ARTIFACTS_TOKEN" push -u origin main
export ARTIFACTS_TOKEN_SECRET="${ARTIFACTS_TOKEN%%\?expires=*}"
export ARTIFACTS_AUTH_REMOTE="https://x:${ARTIFACTS_TOKEN_SECRET}@${ARTIFACTS_REMOTE#https://}"
git push "$ARTIFACTS_AUTH_REMOTE" HEAD:main
"""
SPEC_000_STEP_5 = r"""
cd ..
git -c http.extraHeader="Authorization: Bearer $ARTIFACTS_TOKEN" clone "$ARTIFACTS_REMOTE" artifacts-clone
git -C artifacts-clone log --oneline -1
"""
SPEC_000_STEP_5_BASIC = r"""
git clone "$ARTIFACTS_AUTH_REMOTE" artifacts-clone
"""
SPEC_003 = r"""
REPO_JSON=$(curl --silent "$ARTIFACTS_BASE_URL/repos/$ARTIFACTS_REPO" \
  --header "Authorization: Bearer $CLOUDFLARE_API_TOKEN")
ARTIFACTS_REMOTE=$(printf '%s' "$REPO_JSON" | jq -r '.result.remote')
TOKEN_JSON=$(curl --silent "$ARTIFACTS_BASE_URL/tokens" \
  --header "Authorization: Bearer $CLOUDFLARE_API_TOKEN" \
  --header "Content-Type: application/json" \
  --data "{\"repo\":\"$ARTIFACTS_REPO\",\"scope\":\"read\",\"ttl\":3600}")
ARTIFACTS_TOKEN=$(printf '%s' "$TOKEN_JSON" | jq -r '.result.plaintext')
git -c http.extraHeader="Authorization: Bearer $ARTIFACTS_TOKEN" clone "$ARTIFACTS_REMOTE" artifacts-clone
ARTIFACTS_TOKEN_SECRET="${ARTIFACTS_TOKEN%%\?expires=*}"
ARTIFACTS_AUTH_REMOTE="https://x:${ARTIFACTS_TOKEN_SECRET}@${ARTIFACTS_REMOTE#https://}"
git clone "$ARTIFACTS_AUTH_REMOTE" artifacts-clone-basic
"""


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory):
    """A server whose public URL is https://, as the spec's shell expansions expect."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")}
    env["ARTIFACTD_PUBLIC_URL"] = f"https://127.0.0.1:{port}"
    server = Server(data_dir=tmp_path_factory.mktemp("https-data"), port=port, env=env)
    edit = server.new_api_token("edit")
    server.account_id, server.token = edit["account_id"], edit["token"]
    server.start()
    yield server
    server.stop()


def run_script(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def spec_env(server: Server, git: Git, repo: str) -> dict[str, str]:
    with open(git.env["GIT_CONFIG_GLOBAL"], "a") as config:
        config.write('[url "http://"]\n\tinsteadOf = https://\n')
    return {
        **git.env,
        "ARTIFACTS_NAMESPACE": "default",
        "ARTIFACTS_REPO": repo,
        "ACCOUNT_ID": server.account_id,
        "CLOUDFLARE_API_TOKEN": server.token,
        "ARTIFACTS_BASE_URL": server.ns_url("default"),
    }


def test_spec_walkthrough_verbatim(https_server: Server, tmp_path: Path, unique_name: str) -> None:
    git = Git(tmp_path / "home")
    env = spec_env(https_server, git, unique_name)
    created = run_script(SPEC_000_STEP_2 + 'printf "%s\\n%s\\n" "$ARTIFACTS_REMOTE" "$ARTIFACTS_TOKEN"',
                         tmp_path, env)
    remote, token = created.stdout.split()
    assert remote == f"https://127.0.0.1:{https_server.port}/git/{https_server.account_id}/default/{unique_name}.git"
    env.update(ARTIFACTS_REMOTE=remote, ARTIFACTS_TOKEN=token)

    # Steps 4 and 5 in one shell, so the exports of step 4 reach step 5; the Basic-auth clone
    # goes into a fresh directory because artifacts-clone exists by then.
    script = SPEC_000_STEP_4 + SPEC_000_STEP_5 + "mkdir basic\ncd basic\n" + SPEC_000_STEP_5_BASIC
    result = run_script(script, tmp_path, env)
    assert "main -> main" in result.stderr
    demo_head = git.out("rev-parse", "--short", "HEAD", cwd=tmp_path / "artifacts-demo")
    assert f"{demo_head} Initial commit" in result.stdout.splitlines()
    assert git.out("log", "--format=%h %s", "-1", cwd=tmp_path / "basic" / "artifacts-clone") == (
        f"{demo_head} Initial commit"
    )

    spec3 = tmp_path / "spec3"
    spec3.mkdir()
    run_script(SPEC_003, spec3, env)
    for clone in ("artifacts-clone", "artifacts-clone-basic"):
        assert git.out("rev-parse", "--short", "HEAD", cwd=spec3 / clone) == demo_head

    with httpx.Client(base_url=https_server.ns_url(), headers={
            "Authorization": f"Bearer {https_server.token}"}) as c:
        info = c.get(f"/repos/{unique_name}").json()["result"]
    assert info["last_push_at"] is not None


# -- protocol versions x auth forms ------------------------------------------------------------


@pytest.mark.parametrize("version", ["0", "1", "2"])
@pytest.mark.parametrize("auth", ["bearer", "bearer-no-suffix", "basic"])
def test_clone_push_fetch(sqlite_server: Server, tmp_path: Path, unique_name: str,
                          version: str, auth: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    proto = ["-c", f"protocol.version={version}"]
    if auth == "basic":
        url, opts = basic_remote(repo.remote, repo.token), proto
    else:
        token = repo.token if auth == "bearer" else repo.token.split("?")[0]
        url, opts = repo.remote, [*proto, "-c", bearer(token)]
    first = git.new_work(tmp_path / "a", {"README.md": "one\n", "src/x.py": "print(1)\n"})
    git.run(*opts, "push", url, "main", cwd=tmp_path / "a")
    assert repo.refs() == {"refs/heads/main": first}

    git.run(*opts, "clone", url, str(tmp_path / "b"))
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "b") == first
    assert (tmp_path / "b" / "src" / "x.py").read_text() == "print(1)\n"

    second = git.commit_files(tmp_path / "b", {"README.md": "two\n"}, "Second")
    git.run(*opts, "push", "origin", "main", cwd=tmp_path / "b")
    assert repo.refs()["refs/heads/main"] == second
    git.run(*opts, "pull", "--ff-only", url, "main", cwd=tmp_path / "a")
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "a") == second
    info = repo.info()
    assert info["last_push_at"] is not None and info["updated_at"] >= info["created_at"]
    repo.fsck()


def test_info_refs_headers_and_framing(sqlite_server: Server, unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    auth = {"Authorization": f"Bearer {repo.token}"}
    for service in ("git-upload-pack", "git-receive-pack"):
        r = httpx.get(f"{repo.remote}/info/refs", params={"service": service}, headers=auth)
        assert r.status_code == 200
        assert r.headers["content-type"] == f"application/x-{service}-advertisement"
        assert "no-cache" in r.headers["cache-control"]
        assert r.content.startswith(pkt(f"# service={service}\n") + b"0000")
    v2 = httpx.get(f"{repo.remote}/info/refs", params={"service": "git-upload-pack"},
                   headers={**auth, "Git-Protocol": "version=2"})
    assert v2.content.startswith(pkt("version 2\n"))
    assert b"fetch=" in v2.content and b"ls-refs" in v2.content
    # receive-pack has no v2: a v2 request is answered in v0 framing with push capabilities.
    push_v2 = httpx.get(f"{repo.remote}/info/refs", params={"service": "git-receive-pack"},
                        headers={**auth, "Git-Protocol": "version=2"})
    assert push_v2.content.startswith(pkt("# service=git-receive-pack\n") + b"0000")
    for cap in (b"report-status", b"atomic", b"push-options", b"side-band-64k", b"delete-refs"):
        assert cap in push_v2.content

    probe = rpc(repo.remote, "git-receive-pack", b"0000", f"Bearer {repo.token}")
    assert probe.status_code == 200 and probe.content == b""
    assert probe.headers["content-type"] == "application/x-git-receive-pack-result"


def test_empty_repo_clone_then_first_push_and_head(sqlite_server: Server, tmp_path: Path,
                                                   unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name, default_branch="trunk")
    git = Git(tmp_path / "home")
    cloned = git.run("-c", bearer(repo.token), "clone", repo.remote, str(tmp_path / "c"))
    assert "empty repository" in cloned.stderr
    # v2's unborn HEAD tells the client the default branch of the empty repo.
    assert git.out("symbolic-ref", "HEAD", cwd=tmp_path / "c") == "refs/heads/trunk"
    head = git.commit_files(tmp_path / "c", {"a.txt": "a\n"}, "First")
    git.run("-c", bearer(repo.token), "push", "origin", "trunk", cwd=tmp_path / "c")
    remote_head = git.out("-c", bearer(repo.token), "ls-remote", "--symref", repo.remote, "HEAD")
    assert remote_head.splitlines() == ["ref: refs/heads/trunk\tHEAD", f"{head}\tHEAD"]
    git.run("-c", bearer(repo.token), "clone", repo.remote, str(tmp_path / "d"))
    assert git.out("rev-parse", "--abbrev-ref", "HEAD", cwd=tmp_path / "d") == "trunk"


def test_host_based_path_form(sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    host_form = f"{sqlite_server.url}/git/default/{unique_name}.git"
    git = Git(tmp_path / "home")
    first = git.new_work(tmp_path / "a")
    git.run("-c", bearer(repo.token), "push", host_form, "main", cwd=tmp_path / "a")
    assert repo.refs()["refs/heads/main"] == first
    wrong_account = f"{sqlite_server.url}/git/{'0' * 32}/default/{unique_name}.git"
    r = httpx.get(f"{wrong_account}/info/refs?service=git-upload-pack",
                  headers={"Authorization": f"Bearer {repo.token}"})
    assert r.status_code == 404 and r.text == "Repository not found\n"


# -- partial clone, shallow, refs ------------------------------------------------------------


@pytest.fixture
def history(sqlite_server: Server, tmp_path: Path, unique_name: str) -> tuple[Repo, Git, list[str]]:
    """A repo with five dated commits, a big blob and tags, pushed with the CLI."""
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    work = tmp_path / "origin"
    commits = [git.new_work(work, {"README.md": "v0\n", "big.bin": os.urandom(200_000)})]
    for i in range(1, 5):
        git.env["GIT_COMMITTER_DATE"] = git.env["GIT_AUTHOR_DATE"] = f"2026-01-0{i + 1}T00:00:00Z"
        commits.append(git.commit_files(work, {"README.md": f"v{i}\n", f"f{i}.txt": f"{i}\n"}, f"c{i}"))
    git.run("tag", "v1", commits[1], cwd=work)
    git.run("tag", "-a", "-m", "release 3", "v3", commits[3], cwd=work)
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", "--tags", cwd=work)
    return repo, git, commits


@pytest.mark.parametrize("auth", ["extra-header", "credential-helper"])
@pytest.mark.parametrize("version", ["0", "2"])
def test_partial_clone_blob_none_hydrates_later(history, tmp_path: Path, version: str, auth: str) -> None:
    repo, git, _commits = history
    if auth == "credential-helper":
        # The helper answers the 401 challenge, for the clone and for the lazy fetch later.
        store = tmp_path / "credentials"
        store.write_text(basic_remote(repo.remote, repo.token).rsplit("/git/", 1)[0] + "\n")
        git.run("config", "--global", "credential.helper", f"store --file={store}")
        opts = ["-c", f"protocol.version={version}"]
    else:
        opts = ["-c", f"protocol.version={version}", "-c", bearer(repo.token)]
    clone = tmp_path / "partial"
    git.run(*opts, "clone", "--filter=blob:none", "--no-checkout", repo.remote, str(clone))
    big = git.out("rev-parse", "HEAD:big.bin", cwd=clone)
    missing = git.out("rev-list", "--objects", "--missing=print", "HEAD", cwd=clone)
    assert f"?{big}" in missing.splitlines()
    if auth == "extra-header":
        # http.extraHeader must reach the lazy fetch: set it in the clone's config.
        git.run("config", "http.extraHeader", f"Authorization: Bearer {repo.token}", cwd=clone)
    git.run("config", "protocol.version", version, cwd=clone)
    content = subprocess.run(["git", "cat-file", "-p", big], cwd=clone, env=git.env,
                             capture_output=True, check=True).stdout
    assert len(content) == 200_000
    assert f"?{big}" not in git.out("rev-list", "--objects", "--missing=print", "HEAD", cwd=clone)


@pytest.mark.parametrize("spec", ["blob:limit=1k", "tree:0"])
def test_other_filters(history, tmp_path: Path, spec: str) -> None:
    repo, git, _commits = history
    clone = tmp_path / "f"
    git.run("-c", bearer(repo.token), "clone", f"--filter={spec}", "--no-checkout", repo.remote, str(clone))
    missing = [line for line in git.out("rev-list", "--objects", "--missing=print", "HEAD",
                                        cwd=clone).splitlines() if line.startswith("?")]
    assert missing, "the filter sent everything"
    git.run("config", "http.extraHeader", f"Authorization: Bearer {repo.token}", cwd=clone)
    git.run("checkout", "main", cwd=clone)
    assert (clone / "README.md").read_text() == "v4\n"


@pytest.mark.parametrize("version", ["1", "2"])
def test_shallow_and_deepen(history, tmp_path: Path, version: str) -> None:
    repo, git, _commits = history
    opts = ["-c", f"protocol.version={version}", "-c", bearer(repo.token)]
    clone = tmp_path / "shallow"
    git.run(*opts, "clone", "--depth", "1", repo.remote, str(clone))
    assert git.out("rev-list", "--count", "HEAD", cwd=clone) == "1"
    git.run(*opts, "fetch", "--deepen", "2", cwd=clone)
    assert git.out("rev-list", "--count", "HEAD", cwd=clone) == "3"

    since = tmp_path / "since"
    git.run(*opts, "clone", "--shallow-since=2026-01-03T12:00:00Z", repo.remote, str(since))
    assert git.out("log", "--format=%s", cwd=since).split() == ["c4", "c3"]

    exclude = tmp_path / "exclude"
    git.run(*opts, "clone", "--shallow-exclude=v1", repo.remote, str(exclude))
    assert git.out("log", "--format=%s", cwd=exclude).split() == ["c4", "c3", "c2"]
    git.run(*opts, "fetch", "--unshallow", cwd=exclude)
    assert git.out("rev-list", "--count", "HEAD", cwd=exclude) == "5"


def test_tags_and_notes(history, tmp_path: Path) -> None:
    repo, git, commits = history
    work = tmp_path / "origin"
    git.run("notes", "add", "-m", "reviewed", commits[4], cwd=work)
    git.run("-c", bearer(repo.token), "push", repo.remote, "refs/notes/*:refs/notes/*", cwd=work)
    refs = repo.refs()
    assert refs["refs/tags/v1"] == commits[1] and "refs/tags/v3" in refs and "refs/notes/commits" in refs

    clone = tmp_path / "c"
    git.run("-c", bearer(repo.token), "clone", repo.remote, str(clone))
    assert git.out("tag", cwd=clone).split() == ["v1", "v3"]
    assert git.out("cat-file", "-t", "v3", cwd=clone) == "tag"
    git.run("-c", bearer(repo.token), "fetch", "origin", "refs/notes/*:refs/notes/*", cwd=clone)
    assert git.out("notes", "show", commits[4], cwd=clone) == "reviewed"

    # include-tag: a new annotated tag on a fetched commit arrives with a plain fetch.
    git.run("tag", "-a", "-m", "four", "v4", commits[4], cwd=work)
    git.run("-c", bearer(repo.token), "push", repo.remote, "v4", cwd=work)
    git.run("-c", bearer(repo.token), "fetch", "origin", cwd=clone)
    assert "v4" in git.out("tag", cwd=clone).split()

    git.run("-c", bearer(repo.token), "push", repo.remote, ":refs/tags/v1", cwd=work)
    assert "refs/tags/v1" not in repo.refs()


def test_delete_and_force_push(history, tmp_path: Path) -> None:
    repo, git, commits = history
    work = tmp_path / "origin"
    opts = ["-c", bearer(repo.token)]
    git.run(*opts, "push", repo.remote, f"{commits[2]}:refs/heads/feature", cwd=work)
    assert repo.refs()["refs/heads/feature"] == commits[2]
    git.run(*opts, "push", repo.remote, "--delete", "feature", cwd=work)
    assert "refs/heads/feature" not in repo.refs()

    rejected = git.run(*opts, "push", repo.remote, f"{commits[2]}:main", cwd=work, check=False)
    assert rejected.returncode != 0 and "non-fast-forward" in rejected.stderr
    assert repo.refs()["refs/heads/main"] == commits[4]
    git.run(*opts, "push", "--force", repo.remote, f"{commits[2]}:main", cwd=work)
    assert repo.refs()["refs/heads/main"] == commits[2]
    repo.fsck()


def test_push_options_atomic_and_progress(history, tmp_path: Path) -> None:
    repo, git, commits = history
    work = tmp_path / "origin"
    opts = ["-c", bearer(repo.token)]
    new = git.commit_files(work, {"n.txt": "n\n"}, "c5")
    pushed = git.run(*opts, "push", "--progress", "--atomic", "-o", "ci.skip", "-o", "reason=test",
                     repo.remote, "main", f"{commits[1]}:refs/heads/side", cwd=work)
    assert "main -> main" in pushed.stderr and "-> side" in pushed.stderr
    refs = repo.refs()
    assert refs["refs/heads/main"] == new and refs["refs/heads/side"] == commits[1]

    # Atomic, decided on the server: one command's old value is stale, so neither applies.
    main, side = refs["refs/heads/main"], refs["refs/heads/side"]
    pack = subprocess.run(["git", "pack-objects", "--stdout", "--revs", "--thin"], cwd=work,
                          input=f"{new}\n^{commits[4]}\n".encode(), capture_output=True,
                          check=True, env=git.env).stdout
    body = (pkt(f"{commits[4]} {new} refs/heads/other\0report-status atomic\n")
            + pkt(f"{commits[0]} {commits[2]} refs/heads/side\n") + b"0000" + pack)
    r = rpc(repo.remote, "git-receive-pack", body, f"Bearer {repo.token}")
    assert r.status_code == 200
    assert b"ng refs/heads/side" in r.content and b"ng refs/heads/other" in r.content
    assert b"atomic" in r.content or b"atomic transaction failed" in r.content
    refs = repo.refs()
    assert refs["refs/heads/main"] == main and refs["refs/heads/side"] == side
    assert "refs/heads/other" not in refs
    repo.fsck()


def test_concurrent_pushes_one_wins(sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    base = git.new_work(tmp_path / "a")
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "a")
    clones = []
    for name in ("x", "y", "z"):
        clone = tmp_path / name
        git.run("-c", bearer(repo.token), "clone", repo.remote, str(clone))
        git.commit_files(clone, {f"{name}.txt": name}, f"from {name}")
        clones.append(clone)
    procs = [subprocess.Popen(["git", "-c", bearer(repo.token), "push", "origin", "main"], cwd=c,
                              env=git.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in clones]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    winners = [i for i, (code, _) in enumerate(results) if code == 0]
    assert len(winners) == 1, results
    for code, err in results:
        if code != 0:
            # Racing: receive-pack finds the ref moved under its lock. Arriving after the
            # winner: the client sees the new tip in the advertisement and says "fetch first".
            assert "fetch first" in err or "cannot lock ref 'refs/heads/main'" in err, err
    winner_head = git.out("rev-parse", "HEAD", cwd=clones[winners[0]])
    assert repo.refs()["refs/heads/main"] == winner_head
    assert git.out("merge-base", "--is-ancestor", base, winner_head, cwd=clones[winners[0]]) == ""
    loser, last = clones[(winners[0] + 1) % 3], clones[(winners[0] + 2) % 3]
    stale = git.run("-c", bearer(repo.token), "push", "origin", "main", cwd=loser, check=False)
    assert stale.returncode != 0 and "(fetch first)" in stale.stderr
    git.run("-c", bearer(repo.token), "pull", "--rebase", "origin", "main", cwd=loser)
    git.run("-c", bearer(repo.token), "push", "origin", "main", cwd=loser)
    assert git.out("rev-list", "--count", "HEAD", cwd=loser) == "3"
    git.run("-c", bearer(repo.token), "pull", "--rebase", "origin", "main", cwd=last)
    git.run("-c", bearer(repo.token), "push", "origin", "main", cwd=last)
    assert repo.refs()["refs/heads/main"] == git.out("rev-parse", "HEAD", cwd=last)
    assert git.out("rev-list", "--count", "HEAD", cwd=last) == "4"  # no update was lost
    repo.fsck()


def test_large_push_uses_probe_and_chunked_body(sqlite_server: Server, tmp_path: Path,
                                                unique_name: str) -> None:
    """A pack over http.postBuffer makes git send the "0000" probe, then a chunked body."""
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    head = git.new_work(tmp_path / "a", {"blob.bin": os.urandom(3 << 20)})
    traced = git.run("-c", bearer(repo.token), "-c", "http.postBuffer=65536", "push", repo.remote,
                     "main", cwd=tmp_path / "a")
    assert "main -> main" in traced.stderr
    assert repo.refs()["refs/heads/main"] == head
    info = repo.info()
    assert info["last_push_at"] is not None
    repo.fsck()


def test_gzip_request_body(sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    import gzip

    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    head = git.new_work(tmp_path / "a")
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "a")
    request = pkt("command=ls-refs\n") + b"0001" + pkt("peel\n") + b"0000"
    r = rpc(repo.remote, "git-upload-pack", gzip.compress(request), f"Bearer {repo.token}",
            **{"Content-Encoding": "gzip", "Git-Protocol": "version=2"})
    assert r.status_code == 200, r.text
    assert f"{head} refs/heads/main".encode() in r.content
    bad = rpc(repo.remote, "git-upload-pack", b"\x1f\x8bnot gzip at all", f"Bearer {repo.token}",
              **{"Content-Encoding": "gzip", "Git-Protocol": "version=2"})
    assert bad.status_code == 400 and "gzip" in bad.text


def test_wrong_method_content_type_and_dumb_http(sqlite_server: Server, unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    auth = {"Authorization": f"Bearer {repo.token}"}
    r = httpx.post(f"{repo.remote}/git-upload-pack", content=b"0000",
                   headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 415 and "application/x-git-upload-pack-request" in r.text
    assert httpx.get(f"{repo.remote}/git-upload-pack", headers=auth).status_code == 405
    assert httpx.post(f"{repo.remote}/info/refs?service=git-upload-pack", headers=auth).status_code == 405
    dumb = httpx.get(f"{repo.remote}/info/refs", headers=auth)
    assert dumb.status_code == 403 and "smart HTTP" in dumb.text
    assert dumb.headers["content-type"].startswith("text/plain")
