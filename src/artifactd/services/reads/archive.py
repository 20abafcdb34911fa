"""Archives of a commit: ``git archive`` streamed as it runs (issue 13).

``tar.gz`` uses git's own gzip filter (``--format=tar.gz``), ``zip`` git's zip writer. The
bytes are read from git's stdout one chunk at a time and sent on only when the client takes
them (the HTTP send waits on the socket), so server memory stays flat whatever the size; a
client that goes away ends the stream, and the generator's ``finally`` kills git's process
group. The process holds a git slot for as long as it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from artifactd.errors import InternalError
from artifactd.services.backend import Backend
from artifactd.services.git import git_rpc
from artifactd.storage.gitrunner import GitRunner, PipedGit

FORMATS = {"tar.gz": "application/gzip", "zip": "application/zip"}
CHUNK = 1 << 18  # reads of up to 256 KiB: the pipe holds 1 MiB (gitrunner widens it)


@dataclass
class Archive:
    media_type: str
    first: bytes
    proc: PipedGit
    stack: contextlib.AsyncExitStack

    async def chunks(self) -> AsyncIterator[bytes]:
        """The archive's bytes; always ends git and frees its slot, even when abandoned."""
        try:
            if self.first:
                yield self.first
            while chunk := await self.proc.stdout.read(CHUNK):
                yield chunk
            await self.proc.wait()
        finally:
            GitRunner.kill_group(self.proc.popen)
            await self.proc.wait()
            self.proc.close()
            await self.stack.aclose()


def split_name(ref_and_ext: str) -> tuple[str, str] | None:
    """``main.tar.gz`` -> ("main", "tar.gz"); None when the suffix is not a known format."""
    for ext in FORMATS:
        suffix = "." + ext
        if ref_and_ext.endswith(suffix) and len(ref_and_ext) > len(suffix):
            return ref_and_ext[: -len(suffix)], ext
    return None


async def start(backend: Backend, git_dir: Path, sha: str, fmt: str) -> Archive:
    """Start ``git archive`` of the commit ``sha`` (resolved, 40 hex) and read its first chunk,
    so that a git failure is still an error response rather than a cut stream."""
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(git_rpc.git_slot(backend))
    try:
        proc = await backend.git.spawn_piped(
            git_dir, ["archive", f"--format={fmt}", "--end-of-options", sha], stdin=False,
            limit=CHUNK,
            config=[("tar.tar.gz.command", "gzip -cn"), ("tar.tar.gz.remote", "false")],
        )
    except BaseException:
        await stack.aclose()
        raise
    try:
        first = await proc.stdout.read(CHUNK)
        if not first:
            code = await proc.wait()
            err = (await proc.stderr.read(4096)).decode("utf-8", "replace")
            raise InternalError(f"git archive failed ({code}): "
                                f"{err.replace(str(git_dir), '<repo>').strip()[-300:]}")
    except BaseException:
        GitRunner.kill_group(proc.popen)
        await proc.wait()
        proc.close()
        await stack.aclose()
        raise
    return Archive(FORMATS[fmt], first, proc, stack)
