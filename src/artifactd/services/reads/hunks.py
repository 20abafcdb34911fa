"""Split a unified diff (``git diff --patch``) into per-file JSON hunks.

git writes the patch's files in the order of its ``--raw`` listing (one diff queue, the same
options), so the n-th ``diff --git`` section belongs to the n-th changed file: no path has to
be parsed back out of the (possibly quoted) headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")


@dataclass(frozen=True)
class Hunk:
    old_start: int
    old_lines: int
    new_start: int
    new_lines: int
    header: str  # git's function context after the second @@, if any
    lines: list[str]  # each with its ' ', '+', '-' or '\\' prefix


def split_files(patch: bytes) -> list[list[Hunk]]:
    """The hunks of each file section of ``patch``, in order (a binary file has none)."""
    files: list[list[Hunk]] = []
    current: list[Hunk] | None = None
    lines: list[str] | None = None
    for raw in patch.split(b"\n"):
        if raw.startswith(b"diff --git "):
            current = []
            files.append(current)
            lines = None
            continue
        if current is None:
            continue
        match = _HUNK.match(raw)
        if match:
            lines = []
            current.append(Hunk(int(match[1]), int(match[2] or b"1"), int(match[3]),
                                int(match[4] or b"1"), match[5].decode("utf-8", "replace"), lines))
        elif lines is not None and raw[:1] in (b" ", b"+", b"-", b"\\"):
            lines.append(raw.decode("utf-8", "replace"))
    return files
