"""The copy-on-write overlay of one mount, on disk: ``<state>/overlay/<name>/``.

    journal     one JSON line per change: a path and its new state (``Change``), or none
    data/<n>    the bytes of a written or new file (or a new symlink's target), by number

A path's last line wins, so the journal is replayed in order at mount time and rewritten
(compacted) then and after a commit. Each line goes to the file in one ``write`` (a process
killed at any point leaves whole lines); ``sync`` makes it durable, and the mount calls it
on every ``fsync``. Data files are named by number, never by a user's path.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILE, LINK, DIR, GONE = "file", "link", "dir", "gone"


@dataclass(frozen=True)
class Change:
    """A path's state in the overlay: content of its own (``data``) or a base blob (``oid``)."""

    kind: str  # FILE, LINK, DIR or GONE
    git_mode: str = ""  # 100644, 100755 or 120000
    data: str = ""  # the data file's name
    oid: str = ""  # unchanged content from the base (a renamed or chmodded file)
    size: int = 0  # of ``oid`` (a data file's size is the file's)


def _text(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")  # any bytes; json escapes the surrogates


def replay(journal: Path) -> dict[bytes, Change]:
    """Each changed path's last state in ``journal`` (read only: ``status`` of a stopped mount)."""
    changes: dict[bytes, Change] = {}
    if not journal.exists():
        return changes
    for line in journal.read_bytes().splitlines():
        try:
            record = json.loads(line)
            path = record["path"].encode("utf-8", "surrogateescape")
            change = None if record["change"] is None else Change(**record["change"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line (power loss): the write was never acknowledged
        if change is None:
            changes.pop(path, None)
        else:
            changes[path] = change
    return changes


class Overlay:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data_dir = folder / "data"
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.changes: dict[bytes, Change] = replay(self.journal_path)
        self._journal = -1
        self.compact()
        numbers = [int(p.name) for p in self.data_dir.iterdir() if p.name.isdigit()]
        self._next_data = max(numbers, default=0) + 1

    @property
    def journal_path(self) -> Path:
        return self.folder / "journal"

    @staticmethod
    def _line(path: bytes, change: Change | None) -> bytes:
        record = {"path": _text(path), "change": None if change is None else asdict(change)}
        return json.dumps(record).encode() + b"\n"

    def put(self, path: bytes, change: Change | None) -> None:
        """Record ``path``'s new state (``None``: as in the base again)."""
        if change is None:
            if self.changes.pop(path, None) is None:
                return
        else:
            self.changes[path] = change
        os.write(self._journal, self._line(path, change))

    def sync(self) -> None:
        """The journal, and the names of new data files, on disk (an ``fsync`` in the mount)."""
        os.fsync(self._journal)
        folder = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def new_data(self) -> tuple[str, Path]:
        name = str(self._next_data)
        self._next_data += 1
        return name, self.data_dir / name

    def data_path(self, name: str) -> Path:
        return self.data_dir / name

    def compact(self) -> None:
        """Rewrite the journal as one line per changed path; delete unused data files."""
        tmp = self.folder / "journal.tmp"
        with open(tmp, "wb") as out:
            for path, change in self.changes.items():
                out.write(self._line(path, change))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.journal_path)
        folder = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        if self._journal >= 0:
            os.close(self._journal)
        self._journal = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND)
        used = {change.data for change in self.changes.values() if change.data}
        for item in self.data_dir.iterdir():
            if item.name not in used:
                with contextlib.suppress(FileNotFoundError):
                    item.unlink()  # an open file stays readable until closed

    def forget(self, committed: dict[bytes, Change]) -> None:
        """Drop the changes a commit took (those not changed since), then compact."""
        for path, change in committed.items():
            if self.changes.get(path) == change:
                del self.changes[path]
        self.compact()

    def close(self) -> None:
        if self._journal >= 0:
            os.close(self._journal)
            self._journal = -1
