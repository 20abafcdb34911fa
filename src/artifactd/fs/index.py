"""A git index (version 2) whose stat data matches what the mount reports.

``git read-tree`` would write zero stat data, and ``git status`` would then read every file
to compare it, downloading the whole repo. The mount knows each file's size and reports the
commit's time as every mtime, so it writes the index itself with exactly those values, and
the clone is configured with ``core.checkStat=minimal`` (mtime seconds and size only).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from artifactd.fs.tree import Entry

_MODES = {"100644": 0o100644, "100755": 0o100755, "120000": 0o120000, "160000": 0o160000}


def write_index(path: Path, entries: list[Entry], sizes: dict[str, int], mtime: int) -> None:
    files = sorted((e for e in entries if e.git_mode in _MODES), key=lambda e: e.path)
    out = bytearray(b"DIRC" + struct.pack(">II", 2, len(files)))
    for entry in files:
        size = sizes.get(entry.oid, 0) & 0xFFFFFFFF
        out += struct.pack(">10I", mtime, 0, mtime, 0, 0, 0, _MODES[entry.git_mode], 0, 0, size)
        out += bytes.fromhex(entry.oid)
        out += struct.pack(">H", min(len(entry.path), 0xFFF))
        out += entry.path
        length = 62 + len(entry.path)
        out += b"\0" * (8 - length % 8)  # 1 to 8 NULs, to a multiple of 8
    out += hashlib.sha1(out).digest()  # noqa: S324 - git's index checksum is SHA-1
    tmp = path.with_name("index.artifact-fs.tmp")
    tmp.write_bytes(bytes(out))
    tmp.replace(path)
