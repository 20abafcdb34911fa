"""Helpers for the git data-plane tests: a sealed git environment and repo shortcuts.

Every git command runs with its own HOME and no system config, prompts off and no
credential helper, so that a test sees exactly what a fresh client would.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.harness import Server

ZERO = "0" * 40


# What a repo directory holds besides its object store. In the dense layout ``objects`` is a
# symlink to the repo directory itself (storage/repostore.py DENSE_LINKS), so a walk of
# ``objects/`` sees these too and must leave them out to see the objects alone.
_NOT_OBJECTS = frozenset({"HEAD", "packed-refs", "refs", "shallow"})


def object_files(git_dir: Path) -> list[Path]:
    """Every file of the repo's object store (loose objects, packs, indexes, info/), in
    either layout; ``rglob`` follows no symlink, so the dense links are not walked."""
    objects = git_dir / "objects"
    dense = objects.is_symlink()
    found = []
    for path in sorted(objects.rglob("*")):
        top = path.relative_to(objects).parts[0]
        if dense and (top in _NOT_OBJECTS or top.startswith("HEAD.") or top.endswith(".lock")):
            continue
        if path.is_file() and not path.is_symlink():
            found.append(path)
    return found


def git_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Author",
        "GIT_COMMITTER_EMAIL": "author@example.com",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    })
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    return env


class Git:
    """Runs the git CLI in one sealed environment."""

    def __init__(self, home: Path):
        self.env = git_env(home)

    def run(self, *args: str, cwd: Path | None = None, check: bool = True,
            input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["git", *args], cwd=cwd, env=self.env, capture_output=True, timeout=timeout,
            input=input.decode() if input is not None else None, text=True,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"git {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def out(self, *args: str, cwd: Path | None = None) -> str:
        return self.run(*args, cwd=cwd).stdout.strip()

    def commit_files(self, work: Path, files: dict[str, str | bytes], message: str) -> str:
        for name, content in files.items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        self.run("add", "-A", cwd=work)
        self.run("commit", "-q", "-m", message, cwd=work)
        return self.out("rev-parse", "HEAD", cwd=work)

    def new_work(self, work: Path, files: dict[str, str | bytes] | None = None,
                 message: str = "Initial commit") -> str:
        work.mkdir(parents=True)
        self.run("init", "-q", "-b", "main", cwd=work)
        return self.commit_files(work, files or {"README.md": "# demo\n"}, message)


def bearer(token: str) -> str:
    return f"http.extraHeader=Authorization: Bearer {token}"


def basic_remote(remote: str, token: str, user: str = "x") -> str:
    secret = token.split("?expires=")[0]
    scheme, rest = remote.split("://", 1)
    return f"{scheme}://{user}:{secret}@{rest}"


def basic_header(token: str, user: str = "x") -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


@dataclass
class Repo:
    server: Server
    name: str
    id: str
    remote: str
    token: str
    namespace: str = "default"

    @property
    def git_dir(self) -> Path:
        return self.server.data_dir / "repos" / self.id[:2] / f"{self.id}.git"

    def mint(self, scope: str = "write", ttl: int = 3600) -> dict[str, str]:
        with self.server.client() as c:
            r = c.post("/tokens", json={"repo": self.name, "scope": scope, "ttl": ttl})
            assert r.status_code == 200, r.text
            return dict(r.json()["result"])

    def info(self) -> dict[str, object]:
        with self.server.client() as c:
            r = c.get(f"/repos/{self.name}")
            assert r.status_code == 200, r.text
            return dict(r.json()["result"])

    def refs(self) -> dict[str, str]:
        """The refs on the server's disk, read with git directly (not through HTTP)."""
        if not self.git_dir.exists():
            return {}
        out = subprocess.run(
            ["git", f"--git-dir={self.git_dir}", "for-each-ref", "--format=%(objectname) %(refname)"],
            capture_output=True, text=True, check=True,
        ).stdout
        return {ref: oid for oid, ref in (line.split(" ", 1) for line in out.splitlines())}

    def fsck(self) -> None:
        if not self.git_dir.exists():
            return
        result = subprocess.run(
            ["git", f"--git-dir={self.git_dir}", "fsck", "--strict", "--no-progress"],
            capture_output=True, text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        leftovers = list((self.git_dir / "objects").glob("incoming-*")) + list(
            self.git_dir.rglob("*.lock")
        )
        assert leftovers == [], leftovers

    def expire_token(self, token_id: str) -> None:
        """Move a token's expiry into the past in the server's real SQLite database."""
        with sqlite3.connect(self.server.data_dir / "artifactd.db") as db:
            db.execute("UPDATE repo_tokens SET expires_us = ? WHERE id = ?", (1_000_000, token_id))


def create_repo(server: Server, name: str, **fields: object) -> Repo:
    with server.client() as c:
        r = c.post("/repos", json={"name": name, **fields})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
    return Repo(server, name, result["id"], result["remote"], result["token"])


def git_processes_for(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (leftover git children)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if str(path) in cmdline and "State:\tZ" not in status:
            found.append(cmdline)
    return found


def wait_no_processes(path: Path, seconds: float = 10, needle: str = "") -> list[str]:
    """``git_processes_for(path)`` (those containing ``needle``) once they are gone, or at the
    deadline: a server notices a client that hung up, and reaps its git, a moment later."""
    deadline = time.monotonic() + seconds
    while (left := [p for p in git_processes_for(path) if needle in p]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def pkt(line: str | bytes) -> bytes:
    data = line.encode() if isinstance(line, str) else line
    return b"%04x" % (len(data) + 4) + data


def rpc(url: str, service: str, body: bytes, auth: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/{service}", content=body, timeout=60,
        headers={"Authorization": auth, "Content-Type": f"application/x-{service}-request", **headers},
    )
