"""Writes without a git client (issue 13): commits from files, refs, merge, notes.

Thin: parse, call one service function, shape the result. Every write needs an API token with
edit permission (``endpoint(edit=True)``); the services apply the rest of a push's admission.
"""

from __future__ import annotations

import contextlib

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from artifactd.http.api import Call, endpoint
from artifactd.http.apidoc import Operation, Query, describe
from artifactd.http.control import NS
from artifactd.http.envelope import success
from artifactd.http.jsonbody import check_text
from artifactd.http.results import (
    CommitWriteResult,
    ConflictInfo,
    CursorResultInfo,
    MergeResult,
    NoteResult,
    RefResult,
)
from artifactd.models import (
    CommitRequest,
    CreateBranchRequest,
    MergeRequest,
    NoteRequest,
    UpdateRefRequest,
)
from artifactd.services import limits
from artifactd.services.access import accounts
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import events
from artifactd.services.writes import commit_stream, commits, merges, notes, refs, write_access

TAG_WRITES = "Writes"


def _ref_result(info: refs.RefInfo) -> RefResult:
    return RefResult(name=info.name, ref=info.ref, kind=info.kind, target=info.target,
                     object_type=info.object_type)


def create_commit(call: Call) -> Response:
    made = commits.commit_request(call.backend, call.account_id, call.namespace,
                                  call.path["name"], call.body(CommitRequest))
    return _commit_result(made)


def _commit_result(made: commits.CommitResult) -> Response:
    return success(CommitWriteResult(sha=made.sha, tree=made.tree, branch=made.branch,
                                     parents=made.parents))


_json_commit = endpoint(create_commit, edit=True, body=True, blocking=True)
NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")


async def commit_files(request: Request) -> Response:
    """JSON bodies go through ``endpoint`` (bounded by ``max_body_bytes``); an NDJSON body
    streams, one change per line, with the same checks in the same order."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in NDJSON:
        answer: Response = await _json_commit(request)
        return answer
    backend: Backend = request.app.state.backend
    path = dict(request.path_params)
    authorization = request.headers.get("authorization")
    started = now_us()
    principals: list[accounts.Principal] = []

    def begin() -> None:
        principal = accounts.authenticate(backend, authorization, path["account_id"])
        principals.append(principal)
        check_text(path)
        limits.check_rate(backend, "control", f"{principal.account_id}:{path['namespace']}")
        accounts.require_edit(principal)

    try:
        await run_in_threadpool(begin)
        account = principals[0].account_id
        with contextlib.ExitStack() as stack:
            target = await run_in_threadpool(lambda: stack.enter_context(
                write_access.admit(backend, account, path["namespace"], path["name"])))
            spec = await commit_stream.read_commit(backend, target, request.stream())
            made = await run_in_threadpool(commits.commit, backend, target, spec)
        return _commit_result(made)
    except Exception as exc:
        if principals:
            events.record_error(backend, principals[0].account_id, path["namespace"],
                                path["name"], exc, started_us=started)
        raise


def list_refs(call: Call) -> Response:
    page = refs.list_refs(
        call.backend, call.account_id, call.namespace, call.path["name"],
        call.query.get("kind") or "all", call.int_query("per_page", refs.DEFAULT_PER_PAGE),
        call.query.get("cursor") or None,
    )
    return success([_ref_result(info) for info in page.refs], result_info=CursorResultInfo(
        cursor=page.cursor, per_page=page.per_page, count=len(page.refs)))


def create_branch(call: Call) -> Response:
    made = refs.create_branch(call.backend, call.account_id, call.namespace, call.path["name"],
                              call.body(CreateBranchRequest))
    return success(_ref_result(made))


def move_ref(call: Call) -> Response:
    moved = refs.move_ref(call.backend, call.account_id, call.namespace, call.path["name"],
                          call.body(UpdateRefRequest))
    return success(_ref_result(moved))


def delete_ref(call: Call) -> Response:
    deleted = refs.delete_ref(call.backend, call.account_id, call.namespace, call.path["name"],
                              call.path["ref"], call.query.get("expected") or None)
    return success(_ref_result(deleted))


def merge(call: Call) -> Response:
    outcome = merges.merge(call.backend, call.account_id, call.namespace, call.path["name"],
                           call.body(MergeRequest))
    return success(merge_result(outcome))


def merge_result(outcome: merges.MergeOutcome) -> MergeResult:
    return MergeResult(
        mergeable=outcome.mergeable, sha=outcome.sha, tree=outcome.tree, target=outcome.target,
        head=outcome.head, merge_base=outcome.merge_base, fast_forward=outcome.fast_forward,
        conflicts=[ConflictInfo(path=c.path, hunks=c.hunks) for c in outcome.conflicts],
        messages=outcome.messages,
    )


def _note_result(note: notes.Note) -> NoteResult:
    return NoteResult(commit=note.commit, notes_ref=note.notes_ref, message=note.message,
                      note_sha=note.note_sha, notes_commit=note.notes_commit)


def get_note(call: Call) -> Response:
    note = notes.read_note(call.backend, call.account_id, call.namespace, call.path["name"],
                           call.path["commit"], call.query.get("notes_ref") or "commits")
    return success(_note_result(note))


def put_note(call: Call) -> Response:
    note = notes.write_note(call.backend, call.account_id, call.namespace, call.path["name"],
                            call.path["commit"], call.body(NoteRequest))
    return success(_note_result(note))


def delete_note(call: Call) -> Response:
    note = notes.delete_note(call.backend, call.account_id, call.namespace, call.path["name"],
                             call.path["commit"], call.query.get("notes_ref") or "commits")
    return success(_note_result(note))


NOTES_REF = Query("notes_ref", "Notes ref: `commits` (default, refs/notes/commits) or a name "
                  "under refs/notes/")
REPO = NS + "/repos/{name}"

routes = [
    Route(REPO + "/commits", describe(commit_files, Operation(
        "Commit files", TAG_WRITES, request=CommitRequest, response=CommitWriteResult,
        description="Puts, deletes and moves files on a branch in one commit, atomically; "
                    "`expected_head` makes it a compare-and-swap. Large commits: an "
                    "`application/x-ndjson` body, the header object on the first line and one "
                    "change per line, streamed (docs/api.md).",
        errors=(400, 404, 409, 413),
    )), methods=["POST"]),
    Route(REPO + "/refs", endpoint(list_refs, blocking=True, doc=Operation(
        "List branches and tags", TAG_WRITES, response=RefResult, many=True,
        result_info=CursorResultInfo, query=(
            Query("kind", "Which refs (default `all`)",
                  {"type": "string", "enum": ["all", "branches", "tags"]}),
            Query("per_page", f"Page size, 1 to {refs.MAX_PER_PAGE} (default "
                  f"{refs.DEFAULT_PER_PAGE})",
                  {"type": "integer", "minimum": 1, "maximum": refs.MAX_PER_PAGE}),
            Query("cursor", "The `cursor` of the previous page's `result_info`"),
        ),
    )), methods=["GET"]),
    Route(REPO + "/refs", endpoint(move_ref, edit=True, body=True, blocking=True, doc=Operation(
        "Move a branch or tag", TAG_WRITES, request=UpdateRefRequest, response=RefResult,
        description="Compare-and-swap with `expected`; a branch only moves forward unless "
                    "`force`.",
    )), methods=["PATCH"]),
    Route(REPO + "/refs/{ref:path}", endpoint(delete_ref, edit=True, blocking=True,
          doc=Operation(
              "Delete a branch or tag", TAG_WRITES, response=RefResult,
              query=(Query("expected", "Delete only if the ref is at this commit"),),
          )), methods=["DELETE"]),
    Route(REPO + "/branches", endpoint(create_branch, edit=True, body=True, blocking=True,
          doc=Operation(
              "Create a branch", TAG_WRITES, request=CreateBranchRequest, response=RefResult,
          )), methods=["POST"]),
    Route(REPO + "/merge", endpoint(merge, edit=True, body=True, blocking=True, doc=Operation(
        "Merge a branch or a fork's branch", TAG_WRITES, request=MergeRequest,
        response=MergeResult,
        description="`dry_run` reports mergeable or the conflicts; a real merge with conflicts "
                    "is a 409 whose error lists them.",
    )), methods=["POST"]),
    Route(REPO + "/notes/{commit}", endpoint(get_note, blocking=True, doc=Operation(
        "Read a commit's note", TAG_WRITES, response=NoteResult, query=(NOTES_REF,),
    )), methods=["GET"]),
    Route(REPO + "/notes/{commit}", endpoint(put_note, edit=True, body=True, blocking=True,
          doc=Operation(
              "Write a commit's note", TAG_WRITES, request=NoteRequest, response=NoteResult,
          )), methods=["PUT"]),
    Route(REPO + "/notes/{commit}", endpoint(delete_note, edit=True, blocking=True,
          doc=Operation(
              "Remove a commit's note", TAG_WRITES, response=NoteResult, query=(NOTES_REF,),
          )), methods=["DELETE"]),
]
