"""Import a repo from a public git remote, in the background.

``POST .../repos/:name/import`` checks the URL (``import_source``), probes the remote
(is it git? does ``branch`` exist? what is its default branch?), creates the repo with
status ``importing`` and returns its ``CreateRepoResult`` at once. A thread of the server
process then fetches into a staging directory, watched for the time limit
(``import_timeout``) and the storage limits (what the repo and its account may still
store: ``max_repo_bytes``, ``max_account_bytes``), renames it into
place and marks the repo ``ready``, or ``failed`` with the reason in ``status_reason``.

Lifecycle and restarts:

- While an import runs, its thread holds an exclusive ``flock`` on
  ``tmp/locks/import-<id>.lock``. The lock dies with the process, so at startup every
  worker looks for repos still ``importing`` whose lock it can take: those lost their
  importer (a restart or crash) and are resumed from scratch, at most ``MAX_ATTEMPTS``
  times in all, then marked failed. Several workers never run the same import twice.
- On shutdown running fetches are killed and their repos stay ``importing``, to be
  resumed by the next start. On a crash the server's watchdog ends them (and start-up
  ends any it missed, before resuming): see ``storage.watchdog`` and ``services.repos.recovery``.
- A failed import is retried by POSTing the import again to the same name (with the same
  or a corrected body); or the repo is deleted like any other. Deleting a repo while it
  imports stops the fetch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from artifactd.errors import Code, Conflict, ValidationError
from artifactd.models import ImportRepoRequest
from artifactd.services import limits
from artifactd.services.access import repo_tokens
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import event_stream
from artifactd.services.names import check_branch, check_name
from artifactd.services.repos import repos
from artifactd.services.repos.import_source import AllowList, Probe, Source, check_url, probe
from artifactd.storage.metadata import RepoRow
from artifactd.storage.repostore import object_bytes

log = logging.getLogger("artifactd.import")

MAX_ATTEMPTS = 3
MAX_DEPTH = 2**31 - 1
WATCH_INTERVAL = 0.2  # seconds between checks of a running fetch
ROW_CHECK_INTERVAL = 2.0  # seconds between checks that the repo still exists
MAX_REASON = 500
CLAIM_WAIT = 5.0  # seconds a new attempt waits for the lock of one that is finishing
_STATE_KEY = "imports.state"


@dataclass(frozen=True)
class ImportSpec:
    url: str
    branch: str | None
    depth: int | None
    attempts: int = 0

    def dump(self) -> str:
        return json.dumps({"url": self.url, "branch": self.branch, "depth": self.depth,
                           "attempts": self.attempts})

    @classmethod
    def load(cls, text: str | None) -> ImportSpec:
        data: dict[str, Any] = json.loads(text or "{}")
        return cls(str(data.get("url", "")), data.get("branch"), data.get("depth"),
                   int(data.get("attempts", 0)))


class _State:
    """Per-process bookkeeping: running fetches (killed on shutdown), a concurrency bound."""

    def __init__(self, concurrency: int):
        self.stopping = threading.Event()
        self.slots = threading.BoundedSemaphore(max(1, concurrency))
        self.lock = threading.Lock()
        self.running: dict[str, Any] = {}  # repo id -> Popen


def _state(backend: Backend) -> _State:
    state = backend.extras.get(_STATE_KEY)
    if isinstance(state, _State):
        return state
    created = _State(backend.settings.import_concurrency)
    backend.extras[_STATE_KEY] = created
    return created


class ImportFailed(Exception):
    """The import cannot complete; the message is shown as the repo's ``status_reason``."""


# -- the request ------------------------------------------------------------------------------


def check_depth(depth: object) -> int | None:
    if depth is None:
        return None
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValidationError(f"depth must be an integer from 1 to {MAX_DEPTH}", pointer="/depth")
    return depth


def choose_branch(found: Probe, branch: str | None) -> str:
    if branch is not None:
        if branch not in found.heads:
            raise ValidationError(
                f"Branch {branch!r} does not exist in the remote repository",
                code=Code.IMPORT_BRANCH_NOT_FOUND, pointer="/branch",
            )
        return branch
    if found.head and found.head in found.heads:
        return found.head
    for candidate in ("main", "master"):
        if candidate in found.heads:
            return candidate
    return sorted(found.heads)[0] if found.heads else (found.head or "main")


def start_import(
    backend: Backend, account_id: str, namespace: str, name: str, body: ImportRepoRequest
) -> repos.CreatedRepo:
    """Check, probe, create (or reset a failed import of the same name), then run in background."""
    check_name(namespace, "namespace", "namespace name")
    repo_name = check_name(name, "name", "repo name")
    branch = check_branch(body.branch, "branch") if body.branch is not None else None
    depth = check_depth(body.depth)
    allow = AllowList.parse(backend.settings.import_allow_hosts)
    source = check_url(body.url, allow)
    existing = backend.meta.get_repo(account_id, namespace, repo_name)
    if existing is not None and (existing.status != repos.FAILED or existing.import_spec is None):
        if existing.status in (repos.IMPORTING, repos.FORKING):
            repos.require_ready(existing)
        raise Conflict(
            f"A repo named {repo_name!r} already exists in namespace {namespace!r}",
            code=Code.REPO_EXISTS, pointer="/name",
        )
    found = probe(source, allow)
    default_branch = choose_branch(found, branch)
    spec = ImportSpec(body.url, branch, depth)
    if existing is None:
        created = repos.create_repo(
            backend, account_id, namespace, repo_name, description=body.description,
            default_branch=default_branch, read_only=body.read_only, source=body.url,
            status=repos.IMPORTING, import_spec=spec.dump(),
        )
    else:
        created = _reset_failed(backend, existing, body, spec, default_branch)
    launch(backend, created.repo.id)
    return created


def _reset_failed(
    backend: Backend, repo: RepoRow, body: ImportRepoRequest, spec: ImportSpec, default_branch: str
) -> repos.CreatedRepo:
    """Retry: the failed repo keeps its id and tokens, gets the new spec and a new token."""
    now = now_us()
    backend.repos.trash(repo.id)  # a failed import leaves nothing, but be sure
    backend.meta.update_repo(
        repo.id, status=repos.IMPORTING, status_reason=None, import_spec=spec.dump(),
        source=body.url, default_branch=default_branch, read_only=body.read_only,
        description=body.description if body.description is not None else repo.description,
        updated_us=now,
    )
    fresh = backend.meta.get_repo_by_id(repo.id)
    assert fresh is not None
    minted = repo_tokens.mint(backend, fresh, "write", repo_tokens.DEFAULT_TTL)
    return repos.CreatedRepo(fresh, minted.plaintext, minted.row.expires_us)


# -- the background job ---------------------------------------------------------------------


def _lock_path(backend: Backend, repo_id: str) -> Path:
    backend.repos.path(repo_id)  # validates the id
    directory = backend.repos.tmp_root / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"import-{repo_id}.lock"


def _claim(backend: Backend, repo_id: str, wait: float = 0.0) -> IO[bytes] | None:
    """The import's lock, or ``None`` when another thread or process holds it.

    A finished runner unlinks its lock file, so a lock taken on a file that is no longer
    the one at the path is worthless: check the inode and start over. ``wait`` covers a
    runner of an earlier attempt that is finishing (it set the status, not yet unlocked).
    """
    path = _lock_path(backend, repo_id)
    deadline = time.monotonic() + wait
    while True:
        handle = open(path, "ab")  # noqa: SIM115 - held for the import
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()


def launch(backend: Backend, repo_id: str, lock: IO[bytes] | None = None) -> threading.Thread:
    thread = threading.Thread(
        target=_run_guarded, args=(backend, repo_id, lock), name=f"import-{repo_id[:8]}",
        daemon=True,
    )
    thread.start()
    return thread


def _run_guarded(backend: Backend, repo_id: str, lock: IO[bytes] | None) -> None:
    try:
        run_import(backend, repo_id, lock)
    except Exception:  # never let a thread die silently with the repo stuck in `importing`
        log.exception("import of repo %s crashed", repo_id)
        with contextlib.suppress(Exception):
            _finish_failed(backend, repo_id, "internal error during import (see server log)")


def run_import(backend: Backend, repo_id: str, lock: IO[bytes] | None = None) -> None:
    state = _state(backend)
    lock = lock or _claim(backend, repo_id, wait=CLAIM_WAIT)
    if lock is None:
        return  # someone else is importing it
    try:
        with state.slots:
            repo = backend.meta.get_repo_by_id(repo_id)
            if repo is None or repo.status != repos.IMPORTING or state.stopping.is_set():
                return
            _clean_staging(backend, repo_id)
            try:
                _import(backend, state, repo)
            except ImportFailed as exc:
                if not state.stopping.is_set():
                    _finish_failed(backend, repo_id, str(exc))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(_lock_path(backend, repo_id))
        lock.close()


def _finish_failed(backend: Backend, repo_id: str, reason: str) -> None:
    log.info("import of repo %s failed: %s", repo_id, reason)
    backend.meta.update_repo(
        repo_id, status=repos.FAILED, status_reason=reason[:MAX_REASON], updated_us=now_us()
    )


def _clean_staging(backend: Backend, repo_id: str) -> None:
    """Remove work areas of earlier attempts (their process is gone: we hold the lock)."""
    for path in backend.repos.tmp_root.glob(f"import-{repo_id}-*"):
        backend.repos.discard(path)


def _fetch_args(spec: ImportSpec, url: str) -> list[str]:
    # --progress: git writes its phases and counts to stderr (a file) even though it is not a
    # terminal; ``progress_of`` turns the last line into the repo's status_reason.
    args = ["fetch", "--progress", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
            "--no-auto-gc", "--no-show-forced-updates"]
    if spec.depth is not None:
        args.append(f"--depth={spec.depth}")
    refspecs = (
        [f"+refs/heads/{spec.branch}:refs/heads/{spec.branch}"] if spec.branch
        else ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
    )
    return [*args, "--end-of-options", url, *refspecs]


def _fetch_config(source: Source) -> list[tuple[str, str]]:
    config = [
        ("http.followRedirects", "false"),
        ("http.lowSpeedLimit", "1000"),
        ("http.lowSpeedTime", "60"),
        ("http.userAgent", "git/2 artifactd-import"),
        ("fetch.fsckObjects", "true"),
        # Cosmetic defects that old public histories carry; refusing them would make many
        # real repos impossible to import. Everything else fsck checks still applies.
        ("fetch.fsck.zeroPaddedFilemode", "ignore"),
        ("fetch.fsck.badTimezone", "ignore"),
        ("fetch.fsck.missingSpaceBeforeDate", "ignore"),
        ("submodule.recurse", "false"),
    ]
    resolve = source.curl_resolve()
    if resolve is not None:
        config.append(("http.curloptResolve", resolve))
    return config


def _too_large(limit: int) -> str:
    return f"the repository is larger than the storage limit ({limit} bytes left)"


def _has_commit(backend: Backend, git_dir: Path, ref: str) -> bool:
    result = backend.git.run(
        git_dir, ["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], check=False, timeout=60
    )
    return result.returncode == 0


def _import(backend: Backend, state: _State, repo: RepoRow) -> None:
    spec = ImportSpec.load(repo.import_spec)
    spec = ImportSpec(spec.url, spec.branch, spec.depth, spec.attempts + 1)
    if spec.attempts > MAX_ATTEMPTS:
        raise ImportFailed(f"interrupted {MAX_ATTEMPTS} times (server restarts); retry the import")
    backend.meta.update_repo(repo.id, import_spec=spec.dump())
    allow = AllowList.parse(backend.settings.import_allow_hosts)
    try:
        # Checked again: DNS may answer differently now, and a resumed import may run much later.
        found = probe(check_url(spec.url, allow), allow)
        default_branch = choose_branch(found, spec.branch)
    except ValidationError as exc:
        raise ImportFailed(exc.message) from None
    staging = backend.repos.staging("import", repo.id, default_branch)
    try:
        _fetch(backend, state, repo, spec, found.source, staging)
        if found.heads and not _has_commit(backend, staging, f"refs/heads/{default_branch}"):
            raise ImportFailed(f"branch {default_branch!r} was not fetched")
        size = object_bytes(staging)
        backend.repos.install(staging, repo.id)
    except BaseException:
        backend.repos.discard(staging)
        raise
    now = now_us()
    if not backend.meta.set_repo_size(
        repo.id, size, account_limit=backend.settings.max_account_bytes,
        status=repos.READY, status_reason=None, default_branch=default_branch,
        updated_us=now, last_push_us=now,
        outbox=[event_stream.imported(dataclasses.replace(
            repo, status=repos.READY, default_branch=default_branch, updated_us=now,
            last_push_us=now), spec.url, default_branch)],
    ):
        backend.repos.trash(repo.id)
        if backend.meta.get_repo_by_id(repo.id) is not None:
            # Pushes, forks or imports into the account took the room meanwhile.
            raise ImportFailed(_too_large(limits.remaining_bytes(backend, repo)))
    if backend.meta.get_repo_by_id(repo.id) is None:  # deleted while we fetched
        backend.repos.trash(repo.id)
    log.info("imported repo %s from %s (%d bytes)", repo.id, found.source.url, size)


def _fetch(
    backend: Backend, state: _State, repo: RepoRow, spec: ImportSpec, source: Source, staging: Path
) -> None:
    settings = backend.settings
    # The repo and account storage limits, as they stand when the fetch starts.
    cap = limits.remaining_bytes(backend, repo)
    stderr_path = staging / "import-stderr.log"
    with open(stderr_path, "wb") as stderr:
        proc = backend.git.start(
            staging, _fetch_args(spec, source.url), config=_fetch_config(source), stderr=stderr,
        )
    with state.lock:
        state.running[repo.id] = proc
    started = time.monotonic()
    next_row_check = started + ROW_CHECK_INTERVAL
    try:
        while proc.poll() is None:
            time.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            if state.stopping.is_set():
                backend.git.kill_group(proc)
                raise ImportFailed("server shutting down")
            if now - started > settings.import_timeout:
                backend.git.kill_group(proc)
                raise ImportFailed(f"timed out after {settings.import_timeout:g} seconds")
            if object_bytes(staging) > cap:
                backend.git.kill_group(proc)
                raise ImportFailed(_too_large(cap))
            if now >= next_row_check:
                next_row_check = now + ROW_CHECK_INTERVAL
                current = backend.meta.get_repo_by_id(repo.id)
                if current is None or current.status != repos.IMPORTING:
                    backend.git.kill_group(proc)
                    raise ImportFailed("the repo was deleted during the import")
                progress = progress_of(_tail(stderr_path))
                if progress and progress != current.status_reason:
                    backend.meta.update_repo(repo.id, status_reason=progress)
    finally:
        with state.lock:
            state.running.pop(repo.id, None)
        backend.git.kill_group(proc)  # the remote helper or index-pack may outlive git
        proc.wait()
    message = stderr_path.read_text(errors="replace").strip()
    stderr_path.unlink(missing_ok=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), lines[-1] if lines else "")
        raise ImportFailed(f"git fetch failed: {detail or f'exit status {proc.returncode}'}")
    if object_bytes(staging) > cap:
        raise ImportFailed(_too_large(cap))


# git's progress lines: "Receiving objects:  45% (450/1000), 1.20 MiB | 2.00 MiB/s".
_PROGRESS = re.compile(
    r"(?P<phase>Counting objects|Compressing objects|Receiving objects|Resolving deltas"
    r"|Updating files|Enumerating objects): +\d+% \((?P<done>\d+)/(?P<total>\d+)\)"
    r"(?:, (?P<bytes>[\d.]+ [KMGT]?i?B))?"
)
PROGRESS_TAIL_BYTES = 4096


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - PROGRESS_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def progress_of(stderr_tail: str) -> str | None:
    """The last progress line git wrote, as ``"receiving objects 450/1000 (1.20 MiB)"``:
    the phase and counts an importing repo shows as its ``status_reason``. Only these fixed
    phrases and numbers are taken from git's output, never the remote's own messages."""
    found = None
    for found in _PROGRESS.finditer(stderr_tail):  # noqa: B007 - the last match is the one
        pass
    if found is None:
        return None
    text = f"{found['phase'].lower()} {found['done']}/{found['total']}"
    return f"{text} ({found['bytes']})" if found["bytes"] else text


# -- process lifecycle ------------------------------------------------------------------------


def resume_interrupted(backend: Backend) -> int:
    """Start every ``importing`` repo whose importer is gone; returns how many were started."""
    started = 0
    for repo in backend.meta.repos_with_status(repos.IMPORTING):
        lock = _claim(backend, repo.id)
        if lock is None:
            continue  # running in this or another worker
        log.info("resuming interrupted import of repo %s", repo.id)
        launch(backend, repo.id, lock)
        started += 1
    return started


def shutdown(backend: Backend) -> None:
    """Stop running fetches; their repos stay ``importing`` and resume on the next start."""
    state = _state(backend)
    state.stopping.set()
    with state.lock:
        running = list(state.running.values())
    for proc in running:
        backend.git.kill_group(proc)
