"""Read helper routes (issue 13): compare, archive, blame, and the recursive tree listing.

Same authentication, rate limit and ready check as the content routes (``content.routed``).
The services do the work; this module turns their results into the response models.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from artifactd.errors import Code, NotFound
from artifactd.http.apidoc import Operation, Query
from artifactd.http.content import REF, REPO, Opened, _int_query, routed
from artifactd.http.envelope import success
from artifactd.http.results import (
    BlameCommitInfo,
    BlameInfo,
    BlameRangeInfo,
    ChangedFileInfo,
    CompareInfo,
    CompareSideInfo,
    HunkInfo,
    IdentityInfo,
    LogResultInfo,
    TreeWalkEntryInfo,
    TreeWalkInfo,
)
from artifactd.http.shapes import commit_info
from artifactd.services.reads import archive as archives
from artifactd.services.reads import blame as blames
from artifactd.services.reads import compare as compares
from artifactd.services.reads import treewalk
from artifactd.services.reads.compare import Comparison, Side
from artifactd.services.reads.hunks import Hunk, split_files

DIFF_TYPE = "text/x-diff"
TRUNCATED_HEADER = "X-Artifactd-Truncated"


def wants_diff(request: Request) -> bool:
    """``Accept: text/x-diff`` (or ``?format=diff``, for clients that cannot set headers)."""
    if request.query_params.get("format") == "diff":
        return True
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip() in (DIFF_TYPE, "text/x-patch")
               for part in accept.split(","))


def _side(side: Side) -> CompareSideInfo:
    return CompareSideInfo(repo=side.repo.name, ref=side.ref, sha=side.sha)


def compare_info(
    found: Comparison, file_hunks: list[list[Hunk]] | None = None, cut: bool | None = None
) -> CompareInfo:
    """The compare result; with ``file_hunks`` (one list per file, in order) the JSON hunks."""
    def hunks_of(index: int) -> list[HunkInfo] | None:
        if file_hunks is None:
            return None
        found_hunks = file_hunks[index] if index < len(file_hunks) else []
        return [HunkInfo(old_start=h.old_start, old_lines=h.old_lines, new_start=h.new_start,
                         new_lines=h.new_lines, header=h.header, lines=h.lines)
                for h in found_hunks]

    return CompareInfo(
        base=_side(found.base), head=_side(found.head), merge_base=found.merge_base,
        ahead_by=found.ahead_by, behind_by=found.behind_by,
        commits=[commit_info(c) for c in found.commits],
        commits_truncated=found.commits_truncated,
        files=[ChangedFileInfo(path=f.path, previous_path=f.previous_path,
                               status=f.status,
                               additions=f.additions, deletions=f.deletions, binary=f.binary,
                               hunks=hunks_of(index))
               for index, f in enumerate(found.files)],
        truncated=found.truncated, hunks_truncated=cut,
    )


async def compare(request: Request, opened: Opened) -> Response:
    here = opened.reader.repo
    find = compares.finder_for(opened.backend, here.account_id, here.namespace)
    found = await compares.compare(opened.backend, here, request.path_params["basehead"], find)
    if wants_diff(request):
        patch = await compares.patch(opened.backend, found)
        return Response(patch.data, media_type=DIFF_TYPE, headers={
            TRUNCATED_HEADER: "true" if patch.truncated else "false",
            "Cache-Control": "private, no-cache",
        })
    if request.query_params.get("hunks", "").lower() in ("true", "1"):
        patch = await compares.patch(opened.backend, found)
        return success(compare_info(found, split_files(patch.data), patch.truncated))
    return success(compare_info(found))


async def archive(request: Request, opened: Opened) -> Response:
    parsed = archives.split_name(request.path_params["rest"])
    if parsed is None:
        raise NotFound("Archives are <ref>.tar.gz or <ref>.zip", code=Code.ROUTE_NOT_FOUND)
    ref, fmt = parsed
    sha = await opened.reader.resolve_commit(ref)
    filename = f"{opened.reader.repo.name}-{sha[:12]}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"',
               "Cache-Control": "private, no-cache"}
    if request.method == "HEAD":  # the headers only: no git archive for a body nobody reads
        return Response(headers=headers, media_type=archives.FORMATS[fmt])
    started = await archives.start(opened.backend, opened.reader.git_dir, sha, fmt)
    return StreamingResponse(started.chunks(), media_type=started.media_type, headers=headers)


async def blame(request: Request, opened: Opened) -> Response:
    found = await blames.blame(opened.reader, request.query_params.get("ref") or None,
                               request.query_params.get("path"))
    return success(BlameInfo(
        sha=found.sha, path=found.path,
        ranges=[BlameRangeInfo(start=r.start, lines=r.lines, commit=r.commit,
                               original_start=r.original_start, original_path=r.original_path)
                for r in found.ranges],
        commits=[BlameCommitInfo(
            sha=c.sha,
            author=IdentityInfo(name=c.author_name, email=c.author_email,
                                date=blames.iso_date(c.author_time, c.author_tz)),
            committer=IdentityInfo(name=c.committer_name, email=c.committer_email,
                                   date=blames.iso_date(c.committer_time, c.committer_tz)),
            summary=c.summary,
        ) for c in found.commits.values()],
    ))


async def recursive_tree(request: Request, opened: Opened) -> Response:
    """``tree/:hash?recursive=true`` (``content.tree`` hands over here)."""
    limit = _int_query(request, "limit", treewalk.DEFAULT_LIMIT)
    offset = _int_query(request, "offset", 0)
    page = await treewalk.walk(opened.reader, request.path_params["hash"], offset, limit)
    return success(
        TreeWalkInfo(sha=page.sha, truncated=page.truncated, entries=[
            TreeWalkEntryInfo(path=e.path, mode=e.mode,
                              type="commit" if e.type == "commit" else "blob",
                              sha=e.sha, size=e.size)
            for e in page.entries
        ]),
        result_info=LogResultInfo(page=page.offset // page.limit + 1, per_page=page.limit,
                                  offset=page.offset, count=len(page.entries),
                                  has_more=page.has_more),
    )


TAG = "Repo content"
DIFF = {DIFF_TYPE: {"schema": {"type": "string"}}}
ARCHIVE = {"application/gzip": {"schema": {"type": "string", "format": "binary"}},
           "application/zip": {"schema": {"type": "string", "format": "binary"}}}
routes = [
    Route(REPO + "/compare/{basehead:path}", routed(compare, Operation(
        "Compare two refs", TAG, response=CompareInfo, query=(
            Query("hunks", "Add each file's diff hunks as JSON", {"type": "boolean"}),
            Query("format", "`diff` for the unified diff (as `Accept: text/x-diff`)",
                  {"type": "string", "enum": ["diff", "json"]}),
        ),
        description="`basehead` is `base...head`, each side `ref` or `repo:ref` (a repo of the "
                    "same namespace). With `Accept: text/x-diff` (or `format=diff`) the unified diff "
                    f"(cut at {compares.MAX_PATCH_BYTES} bytes; `{TRUNCATED_HEADER}` says so).",
    )), methods=["GET"]),
    Route(REPO + "/archive/{rest:path}", routed(archive, Operation(
        "Download an archive of a ref", TAG, media=ARCHIVE,
        description="`rest` is `<ref>.tar.gz` or `<ref>.zip`; streamed from `git archive`.",
    )), methods=["GET"]),
    Route(REPO + "/blame", routed(blame, Operation(
        "Blame a file", TAG, response=BlameInfo, query=(
            REF, Query("path", "Path of the file in the tree",
                       {"type": "string", "minLength": 1, "maxLength": 4096}, required=True),
        ), errors=(414,),
    )), methods=["GET"]),
]
