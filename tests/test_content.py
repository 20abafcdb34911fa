"""Repo content routes against a real server, on repos pushed with the git CLI over HTTP."""

from __future__ import annotations

import hashlib
import random
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.gitutil import Git, Repo, create_repo, git_processes_for, wait_no_processes
from tests.harness import Server
from tests.seed import fast_history, push
from tests.test_control_plane import envelope_error

DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
BIG = random.Random(7).randbytes(1_500_000)  # above the 1 MiB in-memory bound: streamed


@dataclass
class Seeded:
    repo: Repo
    work: Path
    git: Git
    first: str  # commit with the initial files (tagged v1 and light)
    head: str  # main
    feature: str  # feature/x
    release_branch: str  # branch "release"
    release_tag: str  # commit of tag "release/v2"
    tag_object: str  # the annotated tag v1's own object id

    def blob(self, path: str, ref: str = "main") -> str:
        return self.git.out("rev-parse", f"{ref}:{path}", cwd=self.work)

    def tree(self, ref: str = "main", path: str = "") -> str:
        return self.git.out("rev-parse", f"{ref}^{{tree}}" if not path else f"{ref}:{path}",
                            cwd=self.work)


@pytest.fixture(scope="module")
def seeded(sqlite_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    base = tmp_path_factory.mktemp("content")
    git = Git(base / "home")
    work = base / "work"
    repo = create_repo(sqlite_server, f"content-{random.randrange(1 << 30)}")
    first = git.new_work(work, {
        "README.md": "# Content\n\nhello\n",
        "src/a.py": "print('main')\n",
        "src/deep/b.txt": "deep\n",
        "docs/with space é.txt": "unicode path\n",
        "image.png": PNG,
        "index.html": "<script>alert(1)</script>\n",
        "data.unknownext": b"\x00\x01binary",
        "notes": "plain text without extension\n",
        "big.bin": BIG,
        "run.sh": "#!/bin/sh\necho hi\n",
    })
    (work / "run.sh").chmod(0o755)
    (work / "link").symlink_to("README.md")
    git.run("add", "-A", cwd=work)
    # A submodule entry (gitlink) pointing at a commit this repo does not have.
    git.run("update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},sub", cwd=work)
    git.run("commit", "-q", "-m", "Second: exec bit, symlink, submodule", cwd=work)
    git.run("tag", "light", first, cwd=work)
    git.run("tag", "-a", "v1", "-m", "version 1", first, cwd=work)
    git.run("checkout", "-q", "-b", "feature/x", cwd=work)
    feature = git.commit_files(work, {"src/a.py": "print('feature')\n"}, "Feature work")
    git.run("checkout", "-q", "main", cwd=work)
    release_branch = git.commit_files(work, {"v2/notes.txt": "on branch release\n"}, "Release branch")
    git.run("branch", "release", cwd=work)
    release_tag = git.commit_files(work, {"notes.txt": "on tag release/v2\n"}, "Tagged release")
    git.run("tag", "release/v2", cwd=work)
    git.run("reset", "-q", "--hard", release_branch + "~1", cwd=work)
    head = git.commit_files(work, {"README.md": "# Content\n\nhello again\n"}, "Update README")
    push(git, repo, work, "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*")
    tag_object = git.out("rev-parse", "v1", cwd=work)
    return Seeded(repo, work, git, first, head, feature, release_branch, release_tag, tag_object)


def c(server: Server, token: str | None = None) -> httpx.Client:
    return server.client(token)


# -- log -------------------------------------------------------------------------------------


def test_log_shape_and_order(sqlite_server: Server, seeded: Seeded) -> None:
    with c(sqlite_server) as client:
        r = client.get(f"/repos/{seeded.repo.name}/log")
        assert r.status_code == 200, r.text
        body = r.json()
        commits = body["result"]
        expected = seeded.git.out("rev-list", "main", cwd=seeded.work).split()
        assert [x["sha"] for x in commits] == expected
        top = commits[0]
        assert set(top) == {"sha", "tree", "parents", "author", "committer", "message"}
        assert top["message"] == "Update README\n"
        assert top["tree"] == seeded.tree("main")
        assert top["parents"] == [seeded.git.out("rev-parse", "main~1", cwd=seeded.work)]
        assert top["author"] == {"name": "Test Author", "email": "author@example.com",
                                 "date": "2026-01-01T00:00:00+00:00"}
        assert DATE.fullmatch(top["committer"]["date"])
        assert body["result_info"] == {"page": 1, "per_page": 50, "offset": 0,
                                       "count": len(expected), "has_more": False}


def test_log_paging(sqlite_server: Server, seeded: Seeded) -> None:
    expected = seeded.git.out("rev-list", "main", cwd=seeded.work).split()
    with c(sqlite_server) as client:
        seen: list[str] = []
        offset = 0
        while True:
            r = client.get(f"/repos/{seeded.repo.name}/log", params={"limit": 2, "offset": offset})
            assert r.status_code == 200, r.text
            page = r.json()
            seen += [x["sha"] for x in page["result"]]
            info = page["result_info"]
            assert info["per_page"] == 2 and info["offset"] == offset
            if not info["has_more"]:
                break
            offset += 2
        assert seen == expected


@pytest.mark.parametrize("ref_kind", ["branch", "slash-branch", "tag", "annotated", "sha", "abbrev",
                                      "full"])
def test_log_refs(sqlite_server: Server, seeded: Seeded, ref_kind: str) -> None:
    ref, tip = {
        "branch": ("main", seeded.head),
        "slash-branch": ("feature/x", seeded.feature),
        "tag": ("light", seeded.first),
        "annotated": ("v1", seeded.first),
        "sha": (seeded.feature, seeded.feature),
        "abbrev": (seeded.feature[:10], seeded.feature),
        "full": ("refs/tags/release/v2", seeded.release_tag),
    }[ref_kind]
    with c(sqlite_server) as client:
        r = client.get(f"/repos/{seeded.repo.name}/log", params={"ref": ref, "limit": 1})
        assert r.status_code == 200, r.text
        assert r.json()["result"][0]["sha"] == tip


def test_log_bad_input(sqlite_server: Server, seeded: Seeded) -> None:
    url = f"/repos/{seeded.repo.name}/log"
    with c(sqlite_server) as client:
        envelope_error(client.get(url, params={"ref": "nope"}), 404, 11201)
        envelope_error(client.get(url, params={"ref": "0" * 40}), 404, 11201)
        for bad in ("main..feature", "main^", "main~1", "HEAD@{1}", ":/msg", "-n", "a b"):
            err = envelope_error(client.get(url, params={"ref": bad}), 400, 10100)
            assert err["source"]["pointer"] == "/ref"
        envelope_error(client.get(url, params={"limit": 0}), 400, 10100)
        envelope_error(client.get(url, params={"limit": 201}), 400, 10100)
        envelope_error(client.get(url, params={"offset": -1}), 400, 10100)
        envelope_error(client.get(url, params={"limit": "x"}), 400, 10100)
        r = client.get(url, params={"offset": 1000})
        assert r.status_code == 200 and r.json()["result"] == []


def test_log_matches_git_on_merges_with_equal_dates(
    sqlite_server: Server, tmp_path: Path, unique_name: str
) -> None:
    """All commits share one timestamp (the sealed git env), so only git's tie order decides."""
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    repo = create_repo(sqlite_server, unique_name)
    git.new_work(work)
    for i in range(3):
        git.run("checkout", "-q", "-b", f"b{i}", "main", cwd=work)
        git.commit_files(work, {f"b{i}.txt": "x\n"}, f"b{i} one")
        git.commit_files(work, {f"b{i}.txt": "y\n"}, f"b{i} two")
        git.run("checkout", "-q", "main", cwd=work)
        git.commit_files(work, {f"m{i}.txt": "m\n"}, f"main {i}")
        git.run("merge", "-q", "--no-ff", "-m", f"merge b{i}", f"b{i}", cwd=work)
    push(git, repo, work, "main")
    expected = git.out("rev-list", "main", cwd=work).split()
    with c(sqlite_server) as client:
        r = client.get(f"/repos/{repo.name}/log", params={"limit": 200})
        assert [x["sha"] for x in r.json()["result"]] == expected
        merge = r.json()["result"][0]
        assert len(merge["parents"]) == 2


def test_log_deep_offsets_agree_with_git(
    sqlite_server: Server, tmp_path: Path, unique_name: str
) -> None:
    """Offsets past 500 use `git rev-list --skip`; pages either side must join up exactly."""
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    repo = create_repo(sqlite_server, unique_name)
    git.new_work(work)
    fast_history(git, work, 620)
    push(git, repo, work, "main")
    expected = git.out("rev-list", "main", cwd=work).split()
    with c(sqlite_server) as client:
        got: list[str] = []
        for offset in (490, 500, 510, 610):
            r = client.get(f"/repos/{repo.name}/log", params={"limit": 10, "offset": offset})
            assert r.status_code == 200, r.text
            page = [x["sha"] for x in r.json()["result"]]
            assert page == expected[offset:offset + 10], offset
            got += page
        assert r.json()["result_info"]["has_more"] is True
        last = client.get(f"/repos/{repo.name}/log", params={"limit": 200, "offset": 520}).json()
        assert [x["sha"] for x in last["result"]] == expected[520:]
        assert last["result_info"]["has_more"] is False


# -- commit and tree --------------------------------------------------------------------------


def test_commit(sqlite_server: Server, seeded: Seeded) -> None:
    url = f"/repos/{seeded.repo.name}/commit"
    with c(sqlite_server) as client:
        r = client.get(f"{url}/{seeded.feature}")
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result["sha"] == seeded.feature and result["message"] == "Feature work\n"
        etag = r.headers["etag"]
        assert etag.startswith(f'"{seeded.feature}') and "immutable" in r.headers["cache-control"]
        again = client.get(f"{url}/{seeded.feature}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        upper = client.get(f"{url}/{seeded.feature.upper()}")
        assert upper.status_code == 200
        # An annotated tag's hash peels to its commit.
        tagged = client.get(f"{url}/{seeded.tag_object}").json()["result"]
        assert tagged["sha"] == seeded.first
        envelope_error(client.get(f"{url}/{'0' * 40}"), 404, 11202)
        envelope_error(client.get(f"{url}/{seeded.blob('README.md')}"), 404, 11202)
        for bad in ("abc", "z" * 40, seeded.feature[:39], seeded.feature + "0", "main"):
            envelope_error(client.get(f"{url}/{bad}"), 400, 11203)


def test_tree(sqlite_server: Server, seeded: Seeded) -> None:
    url = f"/repos/{seeded.repo.name}/tree"
    root = seeded.tree("main")
    with c(sqlite_server) as client:
        r = client.get(f"{url}/{root}")
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result["sha"] == root
        entries = {e["name"]: e for e in result["entries"]}
        assert set(entries["README.md"]) == {"name", "mode", "type", "sha", "size"}
        assert entries["README.md"] == {
            "name": "README.md", "mode": "100644", "type": "blob",
            "sha": seeded.blob("README.md"), "size": len("# Content\n\nhello again\n"),
        }
        assert entries["src"]["mode"] == "040000" and entries["src"]["type"] == "tree"
        assert entries["src"]["size"] is None and entries["src"]["sha"] == seeded.tree("main", "src")
        assert entries["run.sh"]["mode"] == "100755"
        assert entries["link"]["mode"] == "120000" and entries["link"]["size"] == len("README.md")
        assert entries["sub"] == {"name": "sub", "mode": "160000", "type": "commit",
                                  "sha": "1" * 40, "size": None}
        assert entries["big.bin"]["size"] == len(BIG)
        assert entries["docs"]["type"] == "tree"
        docs = client.get(f"{url}/{entries['docs']['sha']}").json()["result"]
        assert [e["name"] for e in docs["entries"]] == ["with space é.txt"]
        # A commit hash peels to its tree; its ETag is immutable.
        peeled = client.get(f"{url}/{seeded.head}")
        assert peeled.json()["result"]["sha"] == root
        assert client.get(f"{url}/{root}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
        envelope_error(client.get(f"{url}/{seeded.blob('README.md')}"), 404, 11202)
        envelope_error(client.get(f"{url}/{'0' * 40}"), 404, 11202)
        envelope_error(client.get(f"{url}/xyz"), 400, 11203)


# -- blob: bytes, ETag, Range ----------------------------------------------------------------


def test_blob_bytes_etag_range(sqlite_server: Server, seeded: Seeded) -> None:
    sha = seeded.blob("README.md")
    data = b"# Content\n\nhello again\n"
    url = f"/repos/{seeded.repo.name}/blob/{sha}"
    with c(sqlite_server) as client:
        r = client.get(url)
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["etag"] == f'"{sha}"' and r.headers["accept-ranges"] == "bytes"
        assert r.headers["content-length"] == str(len(data))
        assert client.get(url, headers={"If-None-Match": f'"{sha}"'}).status_code == 304
        assert client.get(url, headers={"If-None-Match": f'W/"{sha}", "x"'}).status_code == 304
        assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200

        part = client.get(url, headers={"Range": "bytes=2-8"})
        assert part.status_code == 206 and part.content == data[2:9]
        assert part.headers["content-range"] == f"bytes 2-8/{len(data)}"
        assert part.headers["content-length"] == "7"
        tail = client.get(url, headers={"Range": "bytes=-5"})
        assert tail.status_code == 206 and tail.content == data[-5:]
        open_end = client.get(url, headers={"Range": "bytes=10-"})
        assert open_end.status_code == 206 and open_end.content == data[10:]
        clipped = client.get(url, headers={"Range": "bytes=10-999999"})
        assert clipped.status_code == 206 and clipped.content == data[10:]
        # Ignored: several ranges, another unit, garbage, end before start.
        for header in ("bytes=0-1,4-5", "items=0-1", "bytes=abc", "bytes=5-2"):
            full = client.get(url, headers={"Range": header})
            assert full.status_code == 200 and full.content == data, header
        # If-Range with a stale validator sends everything; with the current one, the range.
        assert client.get(url, headers={"Range": "bytes=0-1", "If-Range": '"old"'}).status_code == 200
        assert client.get(url, headers={"Range": "bytes=0-1", "If-Range": f'"{sha}"'}).status_code == 206

        bad = client.get(url, headers={"Range": f"bytes={len(data)}-"})
        envelope_error(bad, 416, 11206)
        assert bad.headers["content-range"] == f"bytes */{len(data)}"
        envelope_error(client.get(url, headers={"Range": "bytes=-0"}), 416, 11206)

        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(data))

        envelope_error(client.get(f"/repos/{seeded.repo.name}/blob/{seeded.tree()}"), 404, 11202)
        envelope_error(client.get(f"/repos/{seeded.repo.name}/blob/{'f' * 40}"), 404, 11202)
        envelope_error(client.get(f"/repos/{seeded.repo.name}/blob/README.md"), 400, 11203)


def test_large_blob_is_streamed_with_ranges(sqlite_server: Server, seeded: Seeded) -> None:
    sha = seeded.blob("big.bin")
    url = f"/repos/{seeded.repo.name}/blob/{sha}"
    with c(sqlite_server) as client:
        with client.stream("GET", url) as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(len(BIG))
            digest = hashlib.sha256()
            for chunk in r.iter_bytes():
                digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(BIG).hexdigest()
        middle = client.get(url, headers={"Range": "bytes=1000000-1000099"})
        assert middle.status_code == 206 and middle.content == BIG[1_000_000:1_000_100]
        end = client.get(url, headers={"Range": "bytes=-10"})
        assert end.content == BIG[-10:]
        head = client.head(url)
        assert head.headers["content-length"] == str(len(BIG)) and head.content == b""
        # A client that reads a little and hangs up leaves no git process behind.
        with client.stream("GET", url) as r:
            next(r.iter_raw(1024))
    assert not wait_no_processes(seeded.repo.git_dir, needle="cat-file blob")


# -- file and raw ----------------------------------------------------------------------------


def test_file(sqlite_server: Server, seeded: Seeded) -> None:
    url = f"/repos/{seeded.repo.name}/file"
    with c(sqlite_server) as client:
        r = client.get(url, params={"ref": "main", "path": "README.md"})
        assert r.status_code == 200 and r.content == b"# Content\n\nhello again\n"
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["etag"] == f'"{seeded.blob("README.md")}"'
        assert "no-cache" in r.headers["cache-control"]
        assert client.get(url, params={"path": "README.md"}).content == r.content  # default branch
        feature = client.get(url, params={"ref": "feature/x", "path": "src/a.py"})
        assert feature.content == b"print('feature')\n"
        assert client.get(url, params={"ref": "v1", "path": "README.md"}).content == b"# Content\n\nhello\n"
        assert client.get(url, params={"ref": "light", "path": "src/a.py"}).content == b"print('main')\n"
        by_sha = client.get(url, params={"ref": seeded.feature, "path": "src/a.py"})
        assert by_sha.content == b"print('feature')\n"
        assert client.get(url, params={"path": "src/deep/b.txt"}).content == b"deep\n"
        assert client.get(url, params={"path": "docs/with space é.txt"}).content == b"unicode path\n"
        assert client.get(url, params={"path": "link"}).content == b"README.md"  # the link's target
        big = client.get(url, params={"path": "big.bin"})
        assert big.content == BIG
        part = client.get(url, params={"path": "README.md"}, headers={"Range": "bytes=0-0"})
        assert part.status_code == 206 and part.content == b"#"

        missing = envelope_error(client.get(url, params={"path": "nope.txt"}), 404, 10200)
        assert missing["message"] == "File not found"
        envelope_error(client.get(url, params={"path": "src/nope/a.py"}), 404, 10200)
        envelope_error(client.get(url, params={"path": "README.md/x"}), 404, 10200)
        envelope_error(client.get(url, params={"path": "sub"}), 404, 10200)
        envelope_error(client.get(url, params={"path": "src"}), 400, 11204)
        envelope_error(client.get(url, params={"ref": "nope", "path": "README.md"}), 404, 11201)
        for bad in ("../etc/passwd", "src/../README.md", "/etc/passwd", "a\x00b", "src//a.py",
                    "./README.md", "src/", "", "a\nb", "x" * 5000):
            err = envelope_error(client.get(url, params={"path": bad}), 400, 11205)
            assert err["source"]["pointer"] == "/path"
        envelope_error(client.get(url), 400, 11205)


def test_raw(sqlite_server: Server, seeded: Seeded) -> None:
    url = f"/repos/{seeded.repo.name}/raw"
    with c(sqlite_server) as client:
        r = client.get(f"{url}/main/README.md")
        assert r.status_code == 200 and r.content == b"# Content\n\nhello again\n"
        assert r.headers["content-type"] == "text/markdown; charset=utf-8"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in r.headers["content-security-policy"]
        assert client.get(f"{url}/main/image.png").headers["content-type"] == "image/png"
        assert client.get(f"{url}/main/src/a.py").headers["content-type"] == "text/plain; charset=utf-8"
        html = client.get(f"{url}/main/index.html")
        assert html.headers["content-type"] == "text/plain; charset=utf-8"  # never rendered
        assert client.get(f"{url}/main/notes").headers["content-type"] == "text/plain; charset=utf-8"
        assert client.get(f"{url}/main/data.unknownext").headers["content-type"] == "application/octet-stream"
        big = client.get(f"{url}/main/big.bin")
        assert big.content == BIG and big.headers["content-type"] == "application/octet-stream"
        # Refs with '/': the longest ref that exists wins.
        feature = client.get(f"{url}/feature/x/src/a.py")
        assert feature.status_code == 200 and feature.content == b"print('feature')\n"
        via_tag = client.get(f"{url}/release/v2/notes.txt")  # tag release/v2 beats branch release
        assert via_tag.content == b"on tag release/v2\n"
        # The tag's commit descends from branch "release", so it has v2/notes.txt too.
        assert client.get(f"{url}/release/v2/v2/notes.txt").content == b"on branch release\n"
        # Not a ref "release/notes.txt" nor "release/README.md": branch "release" it is.
        envelope_error(client.get(f"{url}/release/notes.txt"), 404, 10200)
        assert client.get(f"{url}/release/README.md").content == b"# Content\n\nhello\n"
        assert client.get(f"{url}/{seeded.feature}/src/a.py").content == b"print('feature')\n"
        assert client.get(f"{url}/v1/README.md").content == b"# Content\n\nhello\n"
        assert client.get(f"{url}/main/docs/with%20space%20%C3%A9.txt").content == b"unicode path\n"
        ranged = client.get(f"{url}/main/README.md", headers={"Range": "bytes=2-8"})
        assert ranged.status_code == 206 and ranged.content == b"Content"

        envelope_error(client.get(f"{url}/nope/README.md"), 404, 11201)
        envelope_error(client.get(f"{url}/main/nope"), 404, 10200)
        envelope_error(client.get(f"{url}/main/src"), 400, 11204)
        envelope_error(client.get(f"{url}/main"), 400, 11205)
        envelope_error(client.get(f"{url}/main/src/%2E%2E/README.md"), 400, 11205)
        envelope_error(client.get(f"{url}/main/a%00b"), 400, 11205)


def test_reads_start_no_git_process(sqlite_server: Server, seeded: Seeded) -> None:
    """No process per request, and none kept either: reads are in process, on one open repo."""
    url = f"/repos/{seeded.repo.name}"
    opens = "artifactd_content_repo_opens_total "
    with c(sqlite_server) as client:
        assert client.get(f"{url}/file", params={"path": "README.md"}).status_code == 200
        before = sqlite_server.metric(opens)
        for _ in range(30):
            assert client.get(f"{url}/file", params={"path": "README.md"}).status_code == 200
            assert client.get(f"{url}/commit/{seeded.head}").status_code == 200
            assert client.get(f"{url}/raw/main/README.md").status_code == 200
        # The repository stayed open across the 90 reads (a pooled cat-file used to serve
        # them); a maintenance repack of the repo meanwhile would reopen it, once or twice.
        assert sqlite_server.metric(opens) <= before + 2
        assert [p for p in git_processes_for(seeded.repo.git_dir) if "cat-file" in p] == []


def test_concurrent_reads(sqlite_server: Server, seeded: Seeded) -> None:
    url = f"/repos/{seeded.repo.name}"
    errors: list[str] = []

    def worker(n: int) -> None:
        with c(sqlite_server) as client:
            for i in range(10):
                if (n + i) % 3 == 0:
                    r = client.get(f"{url}/blob/{seeded.blob('big.bin')}",
                                   headers={"Range": f"bytes={i}-{i + 999}"})
                    ok = r.status_code == 206 and r.content == BIG[i:i + 1000]
                elif (n + i) % 3 == 1:
                    r = client.get(f"{url}/file", params={"path": "src/a.py", "ref": "feature/x"})
                    ok = r.content == b"print('feature')\n"
                else:
                    r = client.get(f"{url}/log", params={"limit": 3})
                    ok = r.status_code == 200 and len(r.json()["result"]) == 3
                if not ok:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_new_push_visible_to_warm_reader(sqlite_server: Server, seeded: Seeded, tmp_path: Path,
                                         unique_name: str) -> None:
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    repo = create_repo(sqlite_server, unique_name)
    git.new_work(work, {"a.txt": "one\n"})
    push(git, repo, work, "main")
    with c(sqlite_server) as client:
        assert client.get(f"/repos/{repo.name}/file", params={"path": "a.txt"}).content == b"one\n"
        sha = git.commit_files(work, {"a.txt": "two\n", "b.txt": "new\n"}, "second")
        push(git, repo, work, "main")
        assert client.get(f"/repos/{repo.name}/file", params={"path": "a.txt"}).content == b"two\n"
        assert client.get(f"/repos/{repo.name}/log", params={"limit": 1}).json()["result"][0]["sha"] == sha
        git.run("checkout", "-q", "-b", "later", cwd=work)
        push(git, repo, work, "later")
        later = client.get(f"/repos/{repo.name}/file", params={"ref": "later", "path": "b.txt"})
        assert later.content == b"new\n"


# -- empty, missing, deleted, auth -----------------------------------------------------------


def test_never_pushed_repo_reads_as_empty(sqlite_server: Server, unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    assert not repo.git_dir.exists()
    base = f"/repos/{repo.name}"
    with c(sqlite_server) as client:
        envelope_error(client.get(f"{base}/log"), 404, 11201)
        envelope_error(client.get(f"{base}/file", params={"path": "README.md"}), 404, 11201)
        envelope_error(client.get(f"{base}/raw/main/README.md"), 404, 11201)
        envelope_error(client.get(f"{base}/commit/{'a' * 40}"), 404, 11202)
        envelope_error(client.get(f"{base}/tree/{'a' * 40}"), 404, 11202)
        envelope_error(client.get(f"{base}/blob/{'a' * 40}"), 404, 11202)
        envelope_error(client.get(f"{base}/blob/nothex"), 400, 11203)
    assert not repo.git_dir.exists()  # reads never create the directory


def test_unknown_and_deleted_repo(sqlite_server: Server, seeded: Seeded, tmp_path: Path,
                                  unique_name: str) -> None:
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    repo = create_repo(sqlite_server, unique_name)
    git.new_work(work)
    push(git, repo, work, "main")
    with c(sqlite_server) as client:
        assert client.get(f"/repos/{repo.name}/log").status_code == 200
        assert client.delete(f"/repos/{repo.name}").status_code == 202
        envelope_error(client.get(f"/repos/{repo.name}/log"), 404, 10200)
        envelope_error(client.get(f"/repos/{repo.name}/file", params={"path": "README.md"}), 404, 10200)
        envelope_error(client.get("/repos/no-such-repo/log"), 404, 10200)


def test_auth(sqlite_server: Server, seeded: Seeded) -> None:
    url = f"{sqlite_server.ns_url()}/repos/{seeded.repo.name}/file?path=README.md"
    envelope_error(httpx.get(url), 401, 11010)
    envelope_error(httpx.get(url, headers={"Authorization": "Bearer nope"}), 401, 11011)
    with c(sqlite_server, sqlite_server.read_token) as client:  # read permission is enough
        assert client.get(f"/repos/{seeded.repo.name}/file", params={"path": "README.md"}).status_code == 200
    other = sqlite_server.new_api_token("edit", account="f" * 32)
    envelope_error(httpx.get(url, headers={"Authorization": f"Bearer {other['token']}"}), 403, 11013)
    # A repo token is a git credential, not an API token.
    envelope_error(httpx.get(url, headers={"Authorization": f"Bearer {seeded.repo.token}"}), 401, 11011)


def test_a_repack_under_an_open_repo_is_seen(sqlite_server: Server, seeded: Seeded,
                                               tmp_path: Path, unique_name: str) -> None:
    """Maintenance replaces the packs of a repo that a worker holds open: reads stay right."""
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    repo = create_repo(sqlite_server, unique_name)
    git.new_work(work, {"a.txt": "one\n"})
    push(git, repo, work, "main")
    url = f"/repos/{repo.name}"
    with c(sqlite_server) as client:
        assert client.get(f"{url}/file", params={"path": "a.txt"}).content == b"one\n"
        for n in range(3):
            git.commit_files(work, {"a.txt": f"{n}\n"}, f"change {n}")
            push(git, repo, work, "main")
            git.run("repack", "-a", "-d", "-q", cwd=repo.git_dir)
            git.run("prune-packed", cwd=repo.git_dir)
            r = client.get(f"{url}/file", params={"path": "a.txt"})
            assert r.status_code == 200 and r.content == f"{n}\n".encode(), r.text
