"""Read one git note (``git notes show``) for the MCP ``read_notes`` tool.

The notes ref is a checked ``refs/notes/...`` name given to git through ``GIT_NOTES_REF``
(an environment value, not an option); the commit is a resolved 40-hex id.
"""

from __future__ import annotations

from artifactd.services.reads import gitread
from artifactd.services.reads.content import RepoReader

MAX_NOTE = 1 << 20


async def note_of(reader: RepoReader, notes_ref: str, commit: str) -> str | None:
    out = await gitread.run(reader.backend, reader.git_dir, ["notes", "show", commit],
                            max_bytes=MAX_NOTE, env={"GIT_NOTES_REF": notes_ref},
                            ok_codes=(0, 1))
    if out.returncode != 0 and not out.truncated:
        return None
    return out.data.decode("utf-8", "replace")
