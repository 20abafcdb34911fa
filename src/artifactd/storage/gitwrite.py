"""Git plumbing for writes without a client: blobs, trees, commits, ref updates, merges.

Everything goes through the one ``GitRunner`` with fixed argv. Values that come from a user
never reach an option position: paths and contents travel on stdin (``-z``), ref names are
validated by the services and sent to ``update-ref --stdin``, hashes are checked 40-hex
values, and identities travel in the environment (``GIT_AUTHOR_NAME`` ...), which git reads
as data.

A tree is built in a private temporary index (``GIT_INDEX_FILE``) that is removed when the
write ends, so concurrent writes to one repo never share state; the repo's own index (a bare
repo has none) is never touched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from artifactd.storage.gitrunner import GitError, GitRunner

ZERO = "0" * 40
SMALL_TREE = 2000  # files: up to this many, a tree is written from its listing alone
# git's plumbing reads pathspecs literally with this set: no `:(glob)` magic from a path.
LITERAL = {"GIT_LITERAL_PATHSPECS": "1"}


@dataclass(frozen=True)
class IndexEntry:
    mode: str
    sha: str


@dataclass(frozen=True)
class Identity:
    name: str
    email: str
    date: str | None = None  # anything git's date parser takes; None: now


class RefUpdateRefused(Exception):
    """``update-ref`` refused: the ref moved (compare-and-swap lost) or is locked."""


class GitWriter:
    """Plumbing on one bare repo."""

    def __init__(self, runner: GitRunner, git_dir: Path, tmp_dir: Path):
        self.runner = runner
        self.git_dir = git_dir
        self.tmp_dir = tmp_dir
        self.env: dict[str, str] = dict(LITERAL)
        self._alternates: list[str] = []

    def borrow_objects(self, other: Path) -> None:
        """Read (never write) the objects of another repo of the server too: a dry-run merge
        of a fork sees the fork's commits without copying them."""
        self._alternates.append(str(other / "objects"))
        self.env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = os.pathsep.join(self._alternates)

    def quarantine(self) -> None:
        """Write new objects to the work area from now on (read the repo's as alternates):
        a dry run computes trees without leaving a byte in the repo. Once only: a second call
        (a merge on the ``s3`` store, where every write is quarantined) changes nothing."""
        if "GIT_OBJECT_DIRECTORY" in self.env:
            return
        objects = self.tmp_dir / "objects"
        objects.mkdir(parents=True, exist_ok=True)
        self.env["GIT_OBJECT_DIRECTORY"] = str(objects)
        self._alternates.insert(0, str(self.git_dir / "objects"))
        self.env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = os.pathsep.join(self._alternates)

    def _run(self, args: Sequence[str], *, input: bytes | None = None, check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return self.runner.run(self.git_dir, args, input=input, env={**self.env, **(env or {})},
                               timeout=120, check=check)

    def _git(self, args: Sequence[str], *, input: bytes | None = None,
             env: dict[str, str] | None = None) -> str:
        return self._run(args, input=input, env=env).stdout.decode()

    def adopt_quarantine(self) -> None:
        """Move what the quarantine holds into the repo (a write that passed every check):
        loose objects first, then packs, each ``.idx`` after its ``.pack`` so a reader never
        sees an index without its pack."""
        source = Path(self.env.pop("GIT_OBJECT_DIRECTORY"))
        self._alternates.remove(str(self.git_dir / "objects"))
        if self._alternates:
            self.env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = os.pathsep.join(self._alternates)
        else:
            self.env.pop("GIT_ALTERNATE_OBJECT_DIRECTORIES", None)
        target = self.git_dir / "objects"
        for fanout in sorted(source.glob("[0-9a-f][0-9a-f]")):
            (target / fanout.name).mkdir(exist_ok=True)
            for loose in fanout.iterdir():
                destination = target / fanout.name / loose.name
                if not destination.exists():
                    os.replace(loose, destination)
        packs = sorted((source / "pack").glob("*"), key=lambda p: p.suffix == ".idx")
        for pack in packs:
            (target / "pack").mkdir(exist_ok=True)
            if pack.suffix in (".pack", ".idx", ".rev") and not (target / "pack" / pack.name).exists():
                os.replace(pack, target / "pack" / pack.name)

    # -- reads -------------------------------------------------------------------------

    def resolve(self, full_ref: str) -> str | None:
        """The commit a full ref name points at, or ``None``."""
        result = self._run(
            ["rev-parse", "-q", "--verify", "--end-of-options", full_ref + "^{commit}"], check=False,
        )
        sha = result.stdout.decode().strip()
        return sha if result.returncode == 0 and len(sha) == 40 else None

    def object_type(self, sha: str) -> str | None:
        result = self._run(["cat-file", "-t", sha], check=False)
        return result.stdout.decode().strip() if result.returncode == 0 else None

    def tree_of(self, commit: str) -> str:
        return self._git(["rev-parse", "--verify", "--end-of-options", commit + "^{tree}"]).strip()

    def list_tree(self, tree: str) -> dict[str, IndexEntry]:
        """Every file of ``tree`` (recursively) by path."""
        out = self._run(["ls-tree", "-r", "-z", "--full-tree", tree]).stdout
        entries: dict[str, IndexEntry] = {}
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _, path = record.partition(b"\t")
            mode, _kind, sha = meta.decode().split(" ")
            entries[path.decode("utf-8", "surrogateescape")] = IndexEntry(mode, sha)
        return entries

    def is_ancestor(self, older: str, newer: str) -> bool:
        result = self._run(["merge-base", "--is-ancestor", older, newer], check=False)
        return result.returncode == 0

    def merge_base(self, one: str, two: str) -> str | None:
        result = self._run(["merge-base", one, two], check=False)
        sha = result.stdout.decode().strip()
        return sha if result.returncode == 0 and sha else None

    def refs(self, prefixes: Sequence[str]) -> list[tuple[str, str, str]]:
        """``(refname, target commit or object, object type)`` under ``prefixes``, sorted."""
        out = self._git(["for-each-ref", "--format=%(refname)%00%(objectname)%00%(objecttype)"
                         "%00%(*objectname)", "--", *prefixes])
        found = []
        for line in out.splitlines():
            name, oid, kind, peeled = line.split("\0")
            found.append((name, peeled or oid, kind))
        return found

    def ref_values(self) -> list[str]:
        """Every ref's own value, distinct (what the repo's refs make reachable)."""
        out = self._git(["for-each-ref", "--format=%(objectname)"])
        return sorted(set(out.split()))

    # -- objects -----------------------------------------------------------------------

    def hash_files(self, files: Sequence[Path]) -> list[str]:
        """Write each server-owned temp file as a blob; one git for all of them."""
        if not files:
            return []
        listing = "".join(f"{path}\n" for path in files).encode()
        out = self._git(["hash-object", "-w", "--no-filters", "--stdin-paths"], input=listing)
        shas = out.split()
        if len(shas) != len(files):
            raise GitError(["hash-object"], 0, "hash-object returned a short answer")
        return shas

    def loose_size(self, shas: Iterable[str]) -> int:
        """Bytes on disk of those objects that are loose (what a write just added)."""
        total = 0
        for sha in shas:
            with contextlib.suppress(OSError):
                total += (self.git_dir / "objects" / sha[:2] / sha[2:]).stat().st_size
        return total

    def hash_bytes(self, data: bytes) -> str:
        return self._git(["hash-object", "-w", "--no-filters", "--stdin"], input=data).strip()

    @contextlib.contextmanager
    def temp_index(self) -> Iterator[dict[str, str]]:
        """The environment of a private, empty index file removed afterwards."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="index-", dir=self.tmp_dir)
        os.close(fd)
        os.unlink(name)  # git wants to create it; an empty file is not a valid index
        try:
            yield {"GIT_INDEX_FILE": name}
        finally:
            for leftover in (name, name + ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)

    def write_tree(self, base: str | None, removals: Iterable[str],
                   additions: Iterable[tuple[str, IndexEntry]],
                   full: dict[str, IndexEntry] | None = None) -> str:
        """``base`` (a tree or commit) with ``removals`` taken out and ``additions`` put in;
        the new tree id.

        Given ``full`` (every file of the result) and a small tree, the index is built from it
        directly, which saves the ``read-tree`` process; a large tree is read with
        ``read-tree``, whose cache-tree lets ``write-tree`` rehash only the changed
        directories. Removals come first in the stream so that a file replaced by a
        directory (or the reverse) in the same write is never both at once.
        """
        stream = bytearray()
        if full is not None and len(full) <= SMALL_TREE:
            base, removals, additions = None, (), full.items()
        for path in removals:
            stream += b"0 " + ZERO.encode() + b"\t" + path.encode("utf-8", "surrogateescape") + b"\0"
        for path, entry in additions:
            stream += f"{entry.mode} {entry.sha}\t".encode()
            stream += path.encode("utf-8", "surrogateescape") + b"\0"
        with self.temp_index() as env:
            if base is not None:
                self._git(["read-tree", base], env=env)
            if stream:
                self._git(["update-index", "-z", "--index-info"], input=bytes(stream), env=env)
            return self._git(["write-tree"], env=env).strip()

    def commit_tree(self, tree: str, parents: Sequence[str], message: str,
                    author: Identity, committer: Identity) -> str:
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        env = {
            "GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email,
        }
        if author.date:
            env["GIT_AUTHOR_DATE"] = author.date
        if committer.date:
            env["GIT_COMMITTER_DATE"] = committer.date
        return self._git(args, input=message.encode(), env=env).strip()

    # -- refs --------------------------------------------------------------------------

    def update_refs(self, updates: Sequence[tuple[str, str, str]]) -> None:
        """Move refs atomically: ``(full ref, new value or ZERO to delete, old value or ZERO
        for "must not exist")``. Raises ``RefUpdateRefused`` when any ref is not at its old
        value (or is locked by a concurrent update): then none moved."""
        stream = bytearray(b"start\0")
        for ref, new, old in updates:
            if new == ZERO:
                stream += f"delete {ref}\0{old}\0".encode()
            else:
                stream += f"update {ref}\0{new}\0{old}\0".encode()
        stream += b"prepare\0commit\0"
        result = self._run(["update-ref", "-z", "--stdin"], input=bytes(stream), check=False)
        if result.returncode != 0:
            raise RefUpdateRefused(result.stderr.decode(errors="replace").strip()[:500])

    def pack_reachable(self, tips: Sequence[str], exclude: Iterable[str], out_dir: Path) -> bool:
        """Write one pack (and index) into ``out_dir/pack`` of every object reachable from
        ``tips`` and not from ``exclude`` (quarantined objects included), as a push's pack
        would hold; False (nothing written) when there is no such object."""
        pack_dir = out_dir / "pack"
        pack_dir.mkdir(parents=True, exist_ok=True)
        revs = "".join(f"{tip}\n" for tip in tips) + "".join(f"^{old}\n" for old in exclude)
        name = self._git(["pack-objects", "--revs", "--quiet", "--delta-base-offset",
                          str(pack_dir / "pack")], input=revs.encode()).strip()
        pack = pack_dir / f"pack-{name}.pack"
        with open(pack, "rb") as data:
            count = int.from_bytes(data.read(12)[8:12], "big")
        if count:
            return True
        for leftover in pack_dir.iterdir():
            leftover.unlink()
        return False

    # -- merges ------------------------------------------------------------------------

    def merge_tree(self, ours: str, theirs: str) -> tuple[bool, str, list[str], list[str]]:
        """``git merge-tree --write-tree``: (clean, tree, conflicted paths, messages).

        git 2.39's output: the tree id line, then (when not clean) the conflicted file info
        (``--name-only``: one path per entry), an empty entry, and the informational
        messages; ``-z`` separates entries with NUL.
        """
        result = self._run(
            ["merge-tree", "--write-tree", "-z", "--name-only", "--messages", ours, theirs],
            check=False,
        )
        if result.returncode not in (0, 1):
            raise GitError(["merge-tree"], result.returncode,
                           result.stderr.decode(errors="replace"))
        out = result.stdout.decode("utf-8", "surrogateescape")
        tree, _, rest = out.partition("\0")
        if result.returncode == 0:
            return True, tree.strip(), [], []
        files_part, _, messages_part = rest.partition("\0\0")
        paths = sorted({p for p in files_part.split("\0") if p})
        return False, tree.strip(), paths, _messages(messages_part)

    def show_blob(self, sha: str) -> bytes:
        return self._run(["cat-file", "blob", sha]).stdout

    def raw_value(self, full_ref: str) -> str | None:
        """What a ref itself holds (an annotated tag's object, not its commit), or ``None``."""
        result = self._run(["rev-parse", "-q", "--verify", "--end-of-options", full_ref],
                           check=False)
        sha = result.stdout.decode().strip()
        return sha if result.returncode == 0 and len(sha) == 40 else None

    def fetch_commit(self, source: Path, sha: str) -> None:
        """Copy ``sha`` and what it needs from another repo of the server (a fork), no ref
        moved. ``source`` is a server path (from a repo id), never a user string."""
        self._run(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--end-of-options",
                   str(source), sha],
                  env={"GIT_ALLOW_PROTOCOL": "file"})


def _messages(raw: str) -> list[str]:
    """merge-tree -z messages: ``<n> NUL <n paths NUL> <type> NUL <message> NUL`` each."""
    fields = raw.split("\0")
    messages: list[str] = []
    index = 0
    while index < len(fields) and fields[index].isdigit():
        count = int(fields[index])
        index += 1 + count + 1  # the paths, then the message type
        if index < len(fields):
            messages.append(fields[index].rstrip("\n"))
        index += 1
    return messages
