"""Content routes on awkward input (issue 18, defects 14 and 15): the ``raw`` content-type
rule is deny-by-default, and ``tree`` prints modes as ``git ls-tree`` does."""

from __future__ import annotations

import mimetypes
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactd.http.sniff import sniff
from artifactd.storage.gitobjects import canonical_mode, parse_tree
from tests.gitutil import Git, create_repo
from tests.harness import Server
from tests.seed import push

# What the test accepts on the API origin, written down independently of sniff.py: types a
# browser shows as media, data or a download. Everything else must come back as text or bytes.
INERT_APPLICATION = {
    "application/json", "application/octet-stream", "application/wasm", "application/zip",
    "application/gzip", "application/x-gzip", "application/x-bzip2", "application/x-xz",
    "application/x-tar", "application/x-gtar", "application/zstd", "application/x-7z-compressed",
    "application/vnd.rar", "application/x-rar-compressed", "application/java-archive",
    "application/font-woff", "application/vnd.ms-fontobject",
}
INERT_TEXT = {"text/plain", "text/markdown", "text/csv", "text/tab-separated-values"}


def acceptable(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip()
    if any(word in kind for word in ("xml", "html", "xsl", "svg", "rfc822", "mhtml", "script")):
        return False
    return (kind in INERT_APPLICATION or kind in INERT_TEXT
            or kind.split("/")[0] in ("image", "audio", "video", "font"))


mimetypes.init()
KNOWN_EXTENSIONS = sorted({*mimetypes.types_map, *mimetypes.common_types, ".rss", ".atom", ".rdf",
                           ".mml", ".mht", ".mhtml", ".svgz", ".xht", ".xsl", ".xslt"})
HEADS = [None, b"<html><script>alert(1)</script>", b"\x00\x01\x02binary", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3"]


@pytest.mark.parametrize("head", HEADS, ids=["no-head", "text", "binary", "pdf"])
def test_no_known_extension_is_served_as_a_document(head: bytes | None) -> None:
    served = {ext: sniff(f"dir/file{ext}", head) for ext in KNOWN_EXTENSIONS}
    assert {ext: kind for ext, kind in served.items() if not acceptable(kind)} == {}


@settings(max_examples=300, derandomize=True)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.+-_", max_size=12),
       st.one_of(st.none(), st.binary(max_size=64)))
def test_no_name_or_content_is_served_as_a_document(name: str, head: bytes | None) -> None:
    assert acceptable(sniff(name or "x", head))


def test_the_reported_types_become_plain_text() -> None:
    for ext in (".rss", ".atom", ".rdf", ".mml", ".mht", ".mhtml", ".svg", ".html", ".xml", ".js"):
        assert sniff(f"f{ext}", b"<x/>") == "text/plain; charset=utf-8", ext
    assert sniff("report.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n") == "application/octet-stream"
    assert sniff("a.png", b"\x89PNG\r\n\x1a\n") == "image/png"
    assert sniff("a.json", b"{}") == "application/json; charset=utf-8"
    assert sniff("song.mp3", b"ID3") == "audio/mpeg"
    assert sniff("latin1.html", "<p>caf\xe9</p>".encode("latin-1")) == "text/plain"
    assert sniff("nul.html", b"<p>\x00</p>") == "application/octet-stream"


# -- a real repo: raw types and legacy tree modes over HTTP ----------------------------------

LEGACY_MODES = ["100664", "100775", "100744", "100654", "100600", "100710", "40000", "120777",
                "160644", "100644"]
ZERO_PADDED = "040000"  # an fsck error (zeroPaddedFilemode): refused on push, legacy modes are not
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def _raw_tree(modes: list[str], blob: str) -> bytes:
    """A raw tree object with the modes old tools wrote (git's own history has 100664)."""
    entries = sorted((f"e{index:02d}-{mode}", mode, EMPTY_TREE if mode in ("40000", ZERO_PADDED) else blob)
                     for index, mode in enumerate(modes))
    return b"".join(f"{mode} {name}".encode() + b"\0" + bytes.fromhex(sha) for name, mode, sha in entries)


def _write_tree(git_dir: Path, raw: bytes, env: dict[str, str] | None = None) -> str:
    # `--literally`: hash-object would refuse the modes that mktree and git's own history hold.
    return subprocess.run(["git", f"--git-dir={git_dir}", "hash-object", "-t", "tree", "--literally",
                           "-w", "--stdin"], env=env, input=raw, capture_output=True,
                          check=True).stdout.decode().strip()


def _ls_tree(git_dir: Path, tree: str) -> list[dict[str, str]]:
    out = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-z", tree],
                         capture_output=True, check=True).stdout.decode()
    entries = []
    for record in filter(None, out.split("\0")):
        meta, name = record.split("\t", 1)
        mode, kind, sha = meta.split()
        entries.append({"name": name, "mode": mode, "type": kind, "sha": sha})
    return entries


@pytest.fixture(scope="module")
def legacy(sqlite_server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("legacy")
    git = Git(base / "home")
    work = base / "work"
    files: dict[str, str | bytes] = {f"feed{ext}": "<?xml version='1.0'?><rss/>\n"
                                     for ext in (".rss", ".atom", ".rdf", ".mml", ".mht", ".mhtml")}
    files["page.svg"] = "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>\n"
    files["doc.pdf"] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    first = git.new_work(work, files)
    blob = git.out("rev-parse", f"{first}:feed.rss", cwd=work)
    git.run("mktree", cwd=work, input=b"")  # the empty tree, for the directory entries
    pushed_raw = _raw_tree(LEGACY_MODES, blob)
    pushed = _write_tree(work / ".git", pushed_raw, git.env)
    legacy_commit = git.out("commit-tree", "-p", first, "-m", "legacy modes", pushed, cwd=work)
    repo = create_repo(sqlite_server, f"legacy-{os.urandom(3).hex()}")
    push(git, repo, work, "HEAD:refs/heads/main", f"{legacy_commit}:refs/heads/legacy")
    # A zero-padded directory mode fails fsck on push, so that tree goes straight into the
    # served repo: how such history arrives from before fsck was switched on.
    written_raw = _raw_tree([*LEGACY_MODES, ZERO_PADDED], blob)
    written = _write_tree(repo.git_dir, written_raw)
    return {"repo": repo, "trees": {pushed: pushed_raw, written: written_raw}}


def test_tree_modes_are_what_git_ls_tree_prints(sqlite_server: Server, legacy: dict) -> None:
    repo = legacy["repo"]
    with sqlite_server.client() as c:
        for tree in legacy["trees"]:
            r = c.get(f"/repos/{repo.name}/tree/{tree}")
            assert r.status_code == 200, r.text
            got = [{k: e[k] for k in ("name", "mode", "type", "sha")} for e in r.json()["result"]["entries"]]
            assert got == _ls_tree(repo.git_dir, tree)
            assert {e["mode"] for e in got} == {"100644", "100755", "040000", "120000", "160000"}


def test_tree_parser_canonicalises_like_git(legacy: dict) -> None:
    repo = legacy["repo"]
    for tree, raw in legacy["trees"].items():
        parsed = [{"name": e.name, "mode": e.mode, "type": e.type, "sha": e.sha} for e in parse_tree(raw)]
        assert parsed == _ls_tree(repo.git_dir, tree)
    assert canonical_mode(b"10x644") is None and canonical_mode(b"") is None


def test_raw_types_over_http(sqlite_server: Server, legacy: dict) -> None:
    with sqlite_server.client() as c:
        for ext in (".rss", ".atom", ".rdf", ".mml", ".mht", ".mhtml"):
            r = c.get(f"/repos/{legacy['repo'].name}/raw/main/feed{ext}")
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "text/plain; charset=utf-8", ext
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "sandbox" in r.headers["content-security-policy"]
        svg = c.get(f"/repos/{legacy['repo'].name}/raw/main/page.svg")
        assert svg.headers["content-type"] == "text/plain; charset=utf-8"
        pdf = c.get(f"/repos/{legacy['repo'].name}/raw/main/doc.pdf")
        assert pdf.headers["content-type"] == "application/octet-stream"
