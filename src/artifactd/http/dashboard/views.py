"""The dashboard's pages and actions. Views call the services the REST routes call, with the
same decisions (a read token changes nothing); no SQL and no git here."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from markupsafe import Markup
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from artifactd.errors import NotFound, ValidationError
from artifactd.http.dashboard.charts import bar_chart
from artifactd.http.dashboard.handling import Ctx, redirect
from artifactd.http.dashboard.render import HIGHLIGHTS, SHOW_MAX, highlighted
from artifactd.http.sniff import SNIFF_BYTES, sniff
from artifactd.models import ImportRepoRequest
from artifactd.services import limits
from artifactd.services.access import repo_tokens
from artifactd.services.clock import iso, now_us
from artifactd.services.events import analytics
from artifactd.services.names import check_name
from artifactd.services.reads import browse, content
from artifactd.services.reads.content import RepoReader, check_path
from artifactd.services.repos import forks, imports, repo_search, repos
from artifactd.storage.events import Condition, Order
from artifactd.storage.metadata import RepoRow

NAMESPACES_PER_PAGE = 50
REPOS_PER_PAGE = 50
LOG_PER_PAGE = 30
TOKENS_PER_PAGE = 50
COUNT_CAP = 1000  # namespaces show "1000+" past this many repos
RAW_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def repo_url(repo: RepoRow, view: str = "") -> str:
    base = f"/dashboard/ns/{quote(repo.namespace, safe='')}/r/{quote(repo.name, safe='')}"
    return f"{base}/{view}" if view else base


def ns_url(namespace: str) -> str:
    return f"/dashboard/ns/{quote(namespace, safe='')}"


async def _repo(ctx: Ctx) -> RepoRow:
    namespace = ctx.param("namespace")
    limits.check_rate(ctx.backend, "control", f"{ctx.account_id}:{namespace}")
    return await ctx.db(repos.get_repo, ctx.backend, ctx.account_id, namespace, ctx.param("name"))


# -- namespaces and repos --------------------------------------------------------------------


async def namespaces(ctx: Ctx) -> Response:
    rows, cursor = await ctx.db(repos.list_namespaces, ctx.backend, ctx.account_id,
                                limit=NAMESPACES_PER_PAGE, cursor=ctx.arg("cursor") or None)
    # A count per namespace shown, bounded: a namespace of millions reads COUNT_CAP entries.
    counts = [await ctx.db(ctx.backend.meta.count_repos_upto, ctx.account_id, r.name, COUNT_CAP)
              for r in rows]
    return ctx.render("namespaces.html", namespaces=list(zip(rows, counts, strict=True)),
                      cursor=cursor, cap=COUNT_CAP)


async def repo_list(ctx: Ctx) -> Response:
    namespace = ctx.param("namespace")
    search, sort = ctx.arg("search").strip(), ctx.arg("sort", "created_at")
    direction = ctx.arg("direction") or ("asc" if search else "desc")
    cursor = ctx.arg("cursor") or None
    if search:  # a name prefix, in name order: one range of the name index (docs/dashboard.md)
        check_name(namespace, "namespace", "namespace name")
        found = await ctx.db(repo_search.search_repos, ctx.backend, ctx.account_id, namespace,
                             search, limit=REPOS_PER_PAGE, cursor=cursor, direction=direction)
        rows, next_cursor, sort = found.repos, found.cursor, "name"
    else:
        result = await ctx.db(repos.list_repos, ctx.backend, ctx.account_id, namespace,
                              limit=REPOS_PER_PAGE, cursor=cursor, sort=sort, direction=direction)
        rows, next_cursor = result.repos, result.cursor
    return ctx.render("repos.html", namespace=namespace, repos=rows, cursor=next_cursor,
                      search=search, sort=sort, direction=direction, sorts=repos.SORT_FIELDS,
                      repo_url=repo_url)


async def create_repo(ctx: Ctx) -> Response:
    namespace = ctx.form.get("namespace") or ctx.param("namespace")
    created = await ctx.db(repos.create_repo, ctx.backend, ctx.account_id, namespace,
                           ctx.form.get("name", ""), description=ctx.form.get("description") or None,
                           default_branch=ctx.form.get("default_branch") or None)
    return redirect(repo_url(created.repo))


async def create_in_new_namespace(ctx: Ctx) -> Response:
    namespace = ctx.form.get("namespace", "")
    created = await ctx.db(repos.create_repo, ctx.backend, ctx.account_id, namespace,
                           ctx.form.get("name", ""), description=ctx.form.get("description") or None)
    return redirect(repo_url(created.repo))


async def import_repo(ctx: Ctx) -> Response:
    namespace = ctx.param("namespace")
    try:
        body = ImportRepoRequest(url=ctx.form.get("url", ""), branch=ctx.form.get("branch") or None)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = "/".join(str(p) for p in first["loc"])
        raise ValidationError(f"Invalid {field}: {first['msg']}", pointer=f"/{field}") from None
    created = await ctx.db(imports.start_import, ctx.backend, ctx.account_id, namespace,
                           ctx.form.get("name", ""), body)
    return redirect(repo_url(created.repo))


# -- one repo --------------------------------------------------------------------------------


async def repo_page(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    refs: list[browse.Ref] = []
    tree = None
    readme: Markup | None = None
    if repo.status == repos.READY:
        refs = await run_in_threadpool(browse.list_refs, ctx.backend, repo)  # runs git
        reader = RepoReader(ctx.backend, repo)
        if any(r.kind == "branch" and r.name == repo.default_branch for r in refs):
            commit = await reader.commit(await reader.resolve_commit(repo.default_branch))
            tree = await reader.tree(commit.tree)
            readme = await _readme(reader, tree)
    parent = _parent(repo)
    forks_of = await ctx.db(browse.fork_children, ctx.backend, repo)
    settings = ctx.backend.settings
    return ctx.render(
        "repo.html", repo=repo, remote=settings.remote_url(repo.account_id, repo.namespace, repo.name),
        refs=refs, tree=tree, readme=readme, parent=parent, forks=forks_of, ref=repo.default_branch, path="",
        repo_url=repo_url(repo), ns_url=ns_url(repo.namespace),
    )


README_MAX = 256 << 10


async def _readme(reader: RepoReader, tree: content.Tree) -> Markup | None:
    """The root README, highlighted as text (never rendered as HTML or Markdown)."""
    for item in tree.entries:
        if item.entry.type == "blob" and item.entry.name.lower().startswith("readme") \
                and (item.size or 0) <= README_MAX:
            blob = await reader.blob(item.entry.sha)
            if blob.data is not None and b"\0" not in blob.data[:SNIFF_BYTES]:
                return await run_in_threadpool(highlighted, item.entry.name,
                                               blob.data.decode("utf-8", errors="replace"))
    return None


def _parent(repo: RepoRow) -> tuple[str, str] | None:
    """The fork parent named by the repo's ``source`` (``fork:<namespace>/<name>``)."""
    if repo.source and repo.source.startswith("fork:"):
        namespace, _, name = repo.source[len("fork:"):].partition("/")
        if namespace and name:
            return namespace, name
    return None


async def tree_page(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    repos.require_ready(repo)
    ref = ctx.arg("ref") or repo.default_branch
    path = ctx.arg("path")
    reader = RepoReader(ctx.backend, repo)
    commit = await reader.commit(await reader.resolve_commit(ref))
    tree = await reader.tree(commit.tree)
    if path:
        check_path(path)
        for part in path.split("/"):
            entry = next((i.entry for i in tree.entries if i.entry.name == part), None)
            if entry is None or entry.type != "tree":
                raise NotFound(f"No directory {path!r} at {ref!r}")
            tree = await reader.tree(entry.sha)
    return ctx.render("tree.html", repo=repo, ref=ref, path=path, tree=tree,
                      repo_url=repo_url(repo), ns_url=ns_url(repo.namespace))


async def file_page(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    repos.require_ready(repo)
    ref = ctx.arg("ref") or repo.default_branch
    path = ctx.arg("path")
    blob = await RepoReader(ctx.backend, repo).file(ref, path)
    kind = sniff(path, blob.data[:SNIFF_BYTES] if blob.data is not None else None)
    body = None
    shown = "download"
    if kind in IMAGE_TYPES:
        shown = "image"
    elif blob.data is not None and blob.size <= SHOW_MAX and kind.startswith(("text/", "application/json")):
        shown = "text"
        name = path.rsplit("/", 1)[-1]
        body = HIGHLIGHTS.get((blob.sha, name))
        if body is None:  # CPU work: off the event loop
            body = await run_in_threadpool(highlighted, name, blob.data.decode("utf-8", errors="replace"))
            HIGHLIGHTS.put((blob.sha, name), body)
    return ctx.render("file.html", repo=repo, ref=ref, path=path, blob=blob, kind=kind, shown=shown,
                      body=body, repo_url=repo_url(repo), ns_url=ns_url(repo.namespace))


async def raw_file(ctx: Ctx) -> Response:
    """The file's bytes, with the ``raw/`` route's rules: only inert types keep their type."""
    repo = await _repo(ctx)
    repos.require_ready(repo)
    path = ctx.arg("path")
    blob = await RepoReader(ctx.backend, repo).file(ctx.arg("ref") or repo.default_branch, path)
    kind = sniff(path, blob.data[:SNIFF_BYTES] if blob.data is not None else None)
    name = path.rsplit("/", 1)[-1]
    inline = kind in IMAGE_TYPES or kind.startswith("text/plain")
    disposition = "inline" if inline and not ctx.arg("download") else "attachment"
    headers = {
        "Content-Security-Policy": RAW_CSP, "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-cache",
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(name, safe='')}",
        "Content-Length": str(blob.size),
    }
    return StreamingResponse(content.blob_chunks(ctx.backend, blob, 0, blob.size), media_type=kind,
                             headers=headers)


async def log_page(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    repos.require_ready(repo)
    ref = ctx.arg("ref") or repo.default_branch
    offset_text = ctx.arg("offset", "0")
    if not offset_text.isdigit() or len(offset_text) > 9:
        raise ValidationError("offset must be a non-negative integer", pointer="/offset")
    page_ = await RepoReader(ctx.backend, repo).log(ref, LOG_PER_PAGE, int(offset_text))
    return ctx.render("log.html", repo=repo, ref=ref, page=page_, per_page=LOG_PER_PAGE,
                      repo_url=repo_url(repo), ns_url=ns_url(repo.namespace))


async def commit_page(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    repos.require_ready(repo)
    sha = content.check_hash(ctx.param("sha"))
    commit = await RepoReader(ctx.backend, repo).commit(sha)
    patch = await run_in_threadpool(browse.commit_patch, ctx.backend, repo, commit.sha)  # runs git
    return ctx.render("commit.html", repo=repo, commit=commit, files=split_patch(patch.text),
                      truncated=patch.truncated, repo_url=repo_url(repo), ns_url=ns_url(repo.namespace))


def split_patch(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """A patch as (file header, [(css class, line)]) per file, for side-free rendering."""
    files: list[tuple[str, list[tuple[str, str]]]] = []
    for line in text.split("\n"):
        if line.startswith("diff --git "):
            files.append((line[len("diff --git "):], []))
            continue
        if not files:
            continue
        kind = "ctx"
        if line.startswith(("+++", "---", "index ", "new file", "deleted file", "similarity",
                            "rename ", "old mode", "new mode", "Binary files")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        files[-1][1].append((kind, line if len(line) <= 10_000 else line[:10_000] + " [line cut]"))
    return files


async def refs_page(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    repos.require_ready(repo)
    refs = await run_in_threadpool(browse.list_refs, ctx.backend, repo)  # runs git
    return ctx.render("refs.html", repo=repo, refs=refs, limit=browse.MAX_REFS,
                      repo_url=repo_url(repo), ns_url=ns_url(repo.namespace))


# -- tokens ----------------------------------------------------------------------------------


async def tokens_page(ctx: Ctx, minted: repo_tokens.MintedToken | None = None) -> Response:
    repo = await _repo(ctx)
    state = ctx.arg("state", "active")
    page_text = ctx.arg("page", "1")
    if not page_text.isdigit() or len(page_text) > 6:
        raise ValidationError("page must be a positive integer", pointer="/page")
    result = await ctx.db(repo_tokens.list_tokens, ctx.backend, repo, state=state,
                          page=int(page_text), per_page=TOKENS_PER_PAGE)
    return ctx.render("tokens.html", repo=repo, state=state, result=result, minted=minted,
                      states=repo_tokens.STATES, state_of=repo_tokens.token_state,
                      default_ttl=repo_tokens.DEFAULT_TTL, repo_url=repo_url(repo),
                      ns_url=ns_url(repo.namespace))


async def mint_token(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    ttl_text = ctx.form.get("ttl", "").strip()
    if not ttl_text.isdigit() or len(ttl_text) > 12:
        raise ValidationError("ttl must be a whole number of seconds", pointer="/ttl")
    minted = await ctx.db(repo_tokens.mint, ctx.backend, repo, ctx.form.get("scope", ""), int(ttl_text))
    # Shown once, in this answer only (never in a URL or a redirect).
    return await tokens_page(ctx, minted)


async def revoke_token(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    await ctx.db(repo_tokens.revoke, ctx.backend, ctx.account_id, repo.namespace, ctx.param("token_id"))
    return redirect(repo_url(repo, "tokens"))


# -- fork, delete ----------------------------------------------------------------------------


async def fork_repo(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    forked = await run_in_threadpool(  # git work: never on the event loop
        forks.fork_repo, ctx.backend, ctx.account_id, repo.namespace, repo.name,
        ctx.form.get("name", ""), description=ctx.form.get("description") or None,
    )
    return redirect(repo_url(forked.created.repo))


async def delete_repo(ctx: Ctx) -> Response:
    repo = await _repo(ctx)
    if ctx.form.get("confirm") != repo.name:
        raise ValidationError("To delete the repo, type its name exactly; nothing was deleted",
                              pointer="/confirm")
    await ctx.db(repos.delete_repo, ctx.backend, ctx.account_id, repo.namespace, repo.name)
    return redirect(ns_url(repo.namespace))



# -- analytics -------------------------------------------------------------------------------

ANALYTICS_HOURS = 24
HOUR_US = 3600 * 1_000_000


def _groups(ctx: Ctx, conditions: list[Condition], dimensions: list[str], order: list[Order],
            limit: int) -> list[dict[str, Any]]:
    return analytics.query_groups(ctx.backend, analytics.GroupsQuery(
        account_id=ctx.account_id, conditions=conditions, dimensions=dimensions, order=order,
        limit=limit, want_quantiles=False,
    ))


async def analytics_page(ctx: Ctx) -> Response:
    """Operations per hour over the last day, by event type (and by repo for a namespace),
    from the analytics service that answers GraphQL."""
    namespace = ctx.param("namespace")
    repo = await _repo(ctx) if "name" in ctx.request.path_params else None
    check_name(namespace, "namespace", "namespace name")
    now = now_us()
    first_hour = (now - (ANALYTICS_HOURS - 1) * HOUR_US) // HOUR_US * HOUR_US
    where = [Condition("repositoryNamespace", "=", namespace), Condition("datetime", ">=", first_hour)]
    if repo is not None:
        where.append(Condition("repositoryName", "=", repo.name))
    hourly = await ctx.db(_groups, ctx, where, ["datetimeHour"], [Order("datetimeHour", False)],
                          ANALYTICS_HOURS + 1)
    counts = {row["dimensions"]["datetimeHour"][:13]: int(row["count"]) for row in hourly}
    points = []
    for k in range(ANALYTICS_HOURS):
        stamp = iso(first_hour + k * HOUR_US) or ""
        points.append((stamp[11:13] + ":00", counts.get(stamp[:13], 0)))
    by_type = [
        {"type": row["dimensions"]["eventType"], "kind": row["dimensions"]["eventKind"],
         "count": row["count"], "avg": row["avg"]}
        for row in await ctx.db(_groups, ctx, where, ["eventType", "eventKind"],
                                [Order("count", True)], 50)
    ]
    by_repo: list[tuple[str, int]] = []
    if repo is None:
        by_repo = [(row["dimensions"]["repositoryName"], int(row["count"]))
                   for row in await ctx.db(_groups, ctx, where, ["repositoryName"],
                                           [Order("count", True)], 20)]
    return ctx.render("analytics.html", repo=repo, namespace=namespace, hours=ANALYTICS_HOURS,
                      over_time=bar_chart("Operations per hour", points), by_type=by_type,
                      by_repo=by_repo, ns_url=ns_url(namespace),
                      repo_url=repo_url(repo) if repo else "")
