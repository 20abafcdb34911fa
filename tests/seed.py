"""Seeding repos for the content, fork and import tests: pushed by the git CLI over HTTP.

Repos are created through the REST API and filled with ``git push`` to their remote with
``http.extraHeader`` (the spec's way), so every test starts from exactly what a user's
push leaves on the server. ``fast_history`` writes long histories with ``git fast-import``
in a local work repo first (hundreds of commits in milliseconds), then pushes them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.gitutil import Git, Repo, bearer, create_repo
from tests.harness import Server


def push(git: Git, repo: Repo, work: Path, *refspecs: str, token: str | None = None) -> None:
    git.run("-c", bearer(token or repo.token), "push", "-q", repo.remote, *refspecs, cwd=work)


def clone(git: Git, repo: Repo, dest: Path, *args: str, token: str | None = None) -> Path:
    git.run("-c", bearer(token or repo.token), "clone", "-q", *args, repo.remote, str(dest))
    return dest


def seeded(server: Server, git: Git, work: Path, name: str,
           files: dict[str, str | bytes] | None = None, **fields: object) -> tuple[Repo, str]:
    """A repo with one commit of ``files`` on ``main``; returns it and the commit id."""
    repo = create_repo(server, name, **fields)
    sha = git.new_work(work, files or {"README.md": "# seeded\n"})
    push(git, repo, work, "HEAD:refs/heads/main")
    return repo, sha


def fast_history(git: Git, work: Path, count: int, branch: str = "main") -> list[str]:
    """Append ``count`` commits (one file each) to ``branch`` of the work repo; newest first.

    Commits get increasing committer dates, one second apart, so git's log order is the
    commit order.
    """
    parent = git.run("rev-parse", "--verify", "-q", f"refs/heads/{branch}", cwd=work, check=False)
    start = parent.stdout.strip()
    lines = []
    for i in range(count):
        data = f"commit {i}\n".encode()
        message = f"commit {i}\n".encode()
        when = 1_700_000_000 + i
        lines.append(f"commit refs/heads/{branch}\nmark :{i + 1}\n".encode())
        lines.append(f"committer Bench <bench@example.com> {when} +0000\n".encode())
        lines.append(b"data %d\n%s" % (len(message), message))
        if i == 0 and start:
            lines.append(f"from {start}\n".encode())
        lines.append(f"M 100644 inline file-{i % 50}.txt\n".encode())
        lines.append(b"data %d\n%s\n" % (len(data), data))
    subprocess.run(["git", "fast-import", "--quiet"], input=b"".join(lines), cwd=work,
                   env=git.env, check=True, capture_output=True)
    out = git.out("rev-list", f"--max-count={count}", f"refs/heads/{branch}", cwd=work)
    return out.split()
