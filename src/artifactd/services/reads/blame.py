"""Blame a file at a ref: ``git blame --porcelain`` as JSON line ranges (issue 13).

The ref is resolved to a commit id and the path checked (``content.check_path``) and found
to be a file before git sees either; the path goes after ``--``. Output is bounded
(``MAX_OUTPUT``): a file whose blame is larger is refused rather than cut.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from artifactd.errors import ValidationError
from artifactd.services.reads import gitread
from artifactd.services.reads.content import RepoReader

MAX_OUTPUT = 64 << 20


@dataclass(frozen=True)
class BlameCommit:
    sha: str
    author_name: str
    author_email: str
    author_time: int
    author_tz: str
    committer_name: str
    committer_email: str
    committer_time: int
    committer_tz: str
    summary: str


@dataclass(frozen=True)
class BlameRange:
    start: int  # first line in the file at the ref, 1-based
    lines: int
    commit: str
    original_start: int  # first line in the commit that introduced them
    original_path: str


@dataclass(frozen=True)
class Blame:
    sha: str  # the commit blamed at
    path: str
    ranges: list[BlameRange]
    commits: dict[str, BlameCommit]


async def blame(reader: RepoReader, ref: str | None, path: str | None) -> Blame:
    name = ref or reader.repo.default_branch
    await reader.file(name, path)  # checks ref and path; a directory or missing file is a 4xx
    assert path is not None
    sha = await reader.resolve_commit(name)
    out = await gitread.run(reader.backend, reader.git_dir, [
        "blame", "--porcelain", sha, "--", path,  # sha is a resolved id: no option can hide in it
    ], max_bytes=MAX_OUTPUT)
    if out.truncated:
        raise ValidationError("The file is too large to blame", pointer="/path")
    ranges, commits = parse_porcelain(out.data)
    return Blame(sha, path, ranges, commits)


def parse_porcelain(data: bytes) -> tuple[list[BlameRange], dict[str, BlameCommit]]:
    ranges: list[BlameRange] = []
    fields: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in data.split(b"\n"):
        if raw.startswith(b"\t"):
            continue  # a line of the file itself
        line = raw.decode("utf-8", "replace")
        parts = line.split(" ")
        if len(parts) >= 3 and len(parts[0]) == 40 and parts[1].isdigit():
            sha = parts[0]
            current = fields.setdefault(sha, {})
            if len(parts) == 4:  # the first line of a group: "<sha> <orig> <final> <count>"
                ranges.append(BlameRange(int(parts[2]), int(parts[3]), sha, int(parts[1]), ""))
            continue
        if current is not None and parts[0]:
            key, _, value = line.partition(" ")
            current.setdefault(key, value)
            if key == "filename" and ranges and not ranges[-1].original_path:
                last = ranges[-1]
                ranges[-1] = BlameRange(last.start, last.lines, last.commit, last.original_start,
                                        value)
    # git prints "filename" for every group; fill any gap from the commit's first one.
    ranges = [r if r.original_path else BlameRange(r.start, r.lines, r.commit, r.original_start,
                                                   fields[r.commit].get("filename", ""))
              for r in ranges]
    commits = {sha: BlameCommit(
        sha=sha,
        author_name=f.get("author", ""),
        author_email=f.get("author-mail", "").strip("<>"),
        author_time=int(f.get("author-time", "0") or 0),
        author_tz=f.get("author-tz", "+0000"),
        committer_name=f.get("committer", ""),
        committer_email=f.get("committer-mail", "").strip("<>"),
        committer_time=int(f.get("committer-time", "0") or 0),
        committer_tz=f.get("committer-tz", "+0000"),
        summary=f.get("summary", ""),
    ) for sha, f in fields.items()}
    return ranges, commits


def iso_date(epoch: int, tz: str) -> str:
    """ISO-8601 in the person's own offset (``+0200``), as the content routes give dates."""
    try:
        sign = -1 if tz.startswith("-") else 1
        minutes = sign * (int(tz[1:3]) * 60 + int(tz[3:5]))
    except ValueError:
        minutes = 0
    zone = datetime.timezone(datetime.timedelta(minutes=minutes))
    return datetime.datetime.fromtimestamp(epoch, zone).isoformat()
