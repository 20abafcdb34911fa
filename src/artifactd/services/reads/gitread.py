"""Bounded git reads for the read helpers (compare, blame, recursive tree).

One git process per call, started through the git runner with a fixed argv (every value
from a request is a resolved 40-hex object id or a checked path after ``--``), inside a
git slot like the data plane's. Output past ``max_bytes`` is not read: git is killed and
the caller is told the answer is truncated, so memory stays bounded whatever the repo holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from artifactd.errors import InternalError
from artifactd.services.backend import Backend
from artifactd.services.git import git_rpc
from artifactd.storage.gitrunner import GitRunner

READ_SIZE = 1 << 16
STDERR_TAIL = 4096


@dataclass(frozen=True)
class Output:
    data: bytes
    truncated: bool
    returncode: int
    stderr: str


def alternates_env(others: Sequence[Path]) -> dict[str, str]:
    """Let git read the objects of other repos of the namespace without fetching them.

    The paths are server-owned repo directories (from repo ids), never user strings.
    """
    dirs = [str(path / "objects") for path in others]
    return {"GIT_ALTERNATE_OBJECT_DIRECTORIES": ":".join(dirs)} if dirs else {}


async def run(
    backend: Backend, git_dir: Path, args: Sequence[str], *, max_bytes: int,
    env: Mapping[str, str] | None = None, ok_codes: tuple[int, ...] = (0,),
    stdin: bytes | None = None,
) -> Output:
    """Run git (fed ``stdin``) and collect at most ``max_bytes`` of its stdout."""
    async with git_rpc.git_slot(backend):
        proc = await backend.git.spawn_piped(git_dir, args, env=env, stdin=stdin is not None)
        stderr = bytearray()
        if proc.stdin is not None:
            proc.stdin.write(stdin or b"")
            proc.stdin.close()

        async def drain_stderr() -> None:
            while chunk := await proc.stderr.read(READ_SIZE):
                stderr.extend(chunk)
                del stderr[:-STDERR_TAIL]

        stderr_task = asyncio.create_task(drain_stderr())
        data = bytearray()
        truncated = False
        try:
            while chunk := await proc.stdout.read(READ_SIZE):
                data.extend(chunk)
                if len(data) > max_bytes:
                    truncated = True
                    del data[max_bytes:]
                    break
        except BaseException:  # cancelled (the client left) or failed: git must not outlive us
            GitRunner.kill_group(proc.popen)
            await asyncio.shield(proc.wait())
            stderr_task.cancel()
            proc.close()
            raise
        if truncated:
            GitRunner.kill_group(proc.popen)
        code = await proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await stderr_task
        proc.close()
    message = stderr.decode("utf-8", "replace").replace(str(git_dir), "<repo>")
    if not truncated and code not in ok_codes:
        raise InternalError(f"git {args[0]} failed: {message.strip()[-300:]}")
    return Output(bytes(data), truncated, code, message)
