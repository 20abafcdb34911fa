"""Compare a repo with another of its namespace (a fork with its parent, by default), and
merge the compared head into the base branch: the services of the REST ``compare`` and
``merge`` routes, with their decisions (docs/dashboard.md "Compare and merge")."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from artifactd.errors import ArtifactdError, ValidationError
from artifactd.http.dashboard.handling import Ctx, redirect
from artifactd.http.dashboard.views import _parent, _repo, ns_url, repo_url, split_patch
from artifactd.models import MergeRequest
from artifactd.services.reads import compare as compares
from artifactd.services.repos import repos
from artifactd.services.writes import merges
from artifactd.storage.metadata import RepoRow

COMPARE_PATCH_BYTES = 1 << 20  # of diff shown on the page; the REST route gives all of it


async def _default_sides(ctx: Ctx, repo: RepoRow) -> tuple[str, str]:
    """A fork compares with its parent's default branch; any other repo with itself."""
    parent = _parent(repo)
    if parent is not None and parent[0] == repo.namespace:
        try:
            found = await ctx.db(repos.get_repo, ctx.backend, ctx.account_id, parent[0], parent[1])
            return f"{found.name}:{found.default_branch}", repo.default_branch
        except ArtifactdError:  # the parent was deleted: compare within the fork
            pass
    return repo.default_branch, repo.default_branch


def _side_text(side: compares.Side, here: RepoRow) -> str:
    return side.ref if side.repo.id == here.id else f"{side.repo.name}:{side.ref}"


async def compare_page(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    repos.require_ready(repo)
    default_base, default_head = await _default_sides(ctx, repo)
    base_text, head_text = ctx.arg("base") or default_base, ctx.arg("head") or default_head
    find = compares.finder_for(ctx.backend, ctx.account_id, repo.namespace)
    found = await compares.compare(ctx.backend, repo, f"{base_text}...{head_text}", find)
    patch = await compares.patch(ctx.backend, found, max_bytes=COMPARE_PATCH_BYTES)
    target = found.base.repo
    head_for_merge = f"{found.head.repo.name}:{found.head.ref}"
    # A dry run says whether the merge would apply cleanly (and which files conflict).
    check: merges.MergeOutcome | None = None
    refusal = ""
    if found.ahead_by:
        try:
            check = await run_in_threadpool(  # git work: never on the event loop
                merges.merge, ctx.backend, ctx.account_id, target.namespace, target.name,
                MergeRequest(head=head_for_merge, target=found.base.ref, dry_run=True))
        except ArtifactdError as exc:
            refusal = exc.message
    return ctx.render(
        "compare.html", repo=repo, found=found, files=split_patch(patch.data.decode("utf-8", "replace")),
        patch_cut=patch.truncated, base_text=_side_text(found.base, repo),
        head_text=_side_text(found.head, repo), target=target, target_url=repo_url(target),
        head_for_merge=head_for_merge, check=check, refusal=refusal,
        strategies=merges.STRATEGIES, repo_url=repo_url(repo), ns_url=ns_url(repo.namespace))


async def merge_repo(ctx: Ctx) -> Response:
    """Merge ``head`` into this repo's ``target`` branch, only if that branch is still at the
    commit the compare page showed (``expected_head``): a push in between is a 409 page."""
    repo = await _repo(ctx)
    expected = ctx.form.get("expected_head") or None
    if expected is None:
        raise ValidationError("The merge form names the commit it was compared with; reload "
                              "the compare page", pointer="/expected_head")
    try:
        request = MergeRequest(head=ctx.form.get("head", ""), target=ctx.form.get("target") or None,
                               strategy=ctx.form.get("strategy") or "merge",
                               message=ctx.form.get("message") or None, expected_head=expected)
    except ValueError as exc:  # pydantic's: a malformed field
        raise ValidationError(f"Invalid merge form: {str(exc).splitlines()[0]}") from None
    outcome = await run_in_threadpool(merges.merge, ctx.backend, ctx.account_id, repo.namespace,
                                      repo.name, request)
    if not outcome.mergeable:
        raise ValidationError("The head does not merge cleanly into the target; nothing was "
                              "changed", pointer="/head")
    sha = outcome.sha or outcome.head
    return redirect(repo_url(repo, f"commit/{sha}"))
