"""Who may do what on the git data plane, decided once per request.

A git request names a repo in its path and carries a repo token in ``Authorization``:

- ``Bearer <token>``: the full ``art_v1_<hex>?expires=N`` string, or it without the suffix;
- ``Basic``: any non-empty username, and the token (usually without the suffix, as the spec's
  shell expansion produces it, or the bare 40-hex secret) as password.

Answers, chosen so that nothing reveals whether a repo exists to someone without a token
for it:

- no credentials, or credentials that are not a known token: 401 with
  ``WWW-Authenticate: Basic`` (git's credential helpers then ask for a password);
- a known token whose repo is not the one in the path: 404, exactly what a missing repo
  with any valid token gets (a deleted repo's tokens are deleted with it: 401);
- the right repo, but the token expired or was revoked: 401;
- a push with a ``read`` token, or to a ``read_only`` repo: 403 with a message git prints.

(The HTTP layer answers a refused ``Bearer`` token with 403 rather than 401: see
``http/git.py``.)
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from artifactd.errors import AuthenticationError, Code, NotFound, PermissionDenied, ValidationError
from artifactd.services.access import repo_tokens
from artifactd.services.access.repo_tokens import GitAccess, token_state
from artifactd.services.backend import Backend
from artifactd.services.names import name_problem, ref_problem
from artifactd.services.repos import repos
from artifactd.storage.metadata import RepoRow

Service = Literal["git-upload-pack", "git-receive-pack"]
SERVICES: tuple[Service, ...] = ("git-upload-pack", "git-receive-pack")
Action = Literal["info/refs", "git-upload-pack", "git-receive-pack"]
_ACTIONS: dict[str, Action] = {
    "info/refs": "info/refs", "git-upload-pack": "git-upload-pack",
    "git-receive-pack": "git-receive-pack",
}

# /git/<account>/<namespace>/<repo>.git/<action>  or  /git/<namespace>/<repo>.git/<action>
_PATH = re.compile(
    r"/git/(?:(?P<account>[^/]+)/)?(?P<namespace>[^/]+)/(?P<repo>[^/]+)\.git"
    r"/(?P<action>info/refs|git-upload-pack|git-receive-pack)"
)
# /<namespace>/<repo>.git/<action>: the remote form of Cloudflare's changelog
# (``https://x:<token>@artifacts.cloudflare.dev/<namespace>/<repo>.git``); as with the
# host-based form, the repo token says which account.
_BARE_PATH = re.compile(
    r"/(?P<namespace>[^/]+)/(?P<repo>[^/]+)\.git"
    r"/(?P<action>info/refs|git-upload-pack|git-receive-pack)"
)
_ACCOUNT = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Git-Protocol: ``version=N`` and optional ``key=value`` entries, ':'-separated. Anything
# else (newlines, spaces, shell metacharacters, unknown shapes) is refused, never passed on.
_PROTOCOL_ENTRY = re.compile(r"[a-z][a-z0-9-]{0,31}(?:=[A-Za-z0-9._-]{1,64})?")
_PROTOCOL_VERSION = re.compile(r"version=[0-2]")
MAX_PROTOCOL_HEADER = 256

NOT_FOUND_MESSAGE = "Repository not found"


@dataclass(frozen=True)
class GitTarget:
    """A repo as named by a git URL (the account is absent in the host-based form)."""

    account_id: str | None
    namespace: str
    repo: str
    action: Action

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.repo}"


def parse_path(path: str) -> GitTarget | None:
    """The repo and action a request path names, or ``None`` (a 404) when it names none.

    ``path`` is the percent-decoded path, so ``%2e%2e`` arrives as ``..``; names must pass
    the repo-name rules, which rule out ``.``, ``..`` and empty segments. A trailing ``/``
    does not match.
    """
    match = _PATH.fullmatch(path) or _BARE_PATH.fullmatch(path)
    if match is None:
        return None
    account = match.groupdict().get("account")
    if account is not None and not _ACCOUNT.fullmatch(account):
        return None
    if name_problem(match.group("namespace")) or name_problem(match.group("repo")):
        return None
    action: Action = _ACTIONS[match.group("action")]
    return GitTarget(account, match.group("namespace"), match.group("repo"), action)


def check_git_protocol(header: str | None) -> str | None:
    """The value to pass to git as ``GIT_PROTOCOL``, or ``None``; refuses anything odd."""
    if header is None or header == "":
        return None
    if len(header) > MAX_PROTOCOL_HEADER:
        raise ValidationError("Git-Protocol header is too long")
    entries = header.split(":")
    if not all(_PROTOCOL_ENTRY.fullmatch(entry) for entry in entries):
        raise ValidationError("Invalid Git-Protocol header")
    versions = [entry for entry in entries if entry.startswith("version")]
    if len(versions) > 1 or (versions and not _PROTOCOL_VERSION.fullmatch(versions[0])):
        raise ValidationError("Invalid Git-Protocol header: version must be 0, 1 or 2")
    return header


def protocol_for(service: Service, protocol: str | None) -> str | None:
    """receive-pack has no v2: git would fall back to v0 but http-backend-style framing
    would not, so a push speaks v0/v1 whatever the client asked for."""
    if service == "git-receive-pack" and protocol and "version=2" in protocol.split(":"):
        return None
    return protocol


def credential_from(authorization: str | None) -> str | None:
    """The token string from an ``Authorization`` header; ``None`` when there is none."""
    if authorization is None or not authorization.strip():
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        if not value:
            raise AuthenticationError("Empty Bearer token", code=Code.INVALID_REPO_TOKEN)
        return value
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError(
                "Malformed Basic credentials", code=Code.INVALID_REPO_TOKEN
            ) from None
        username, colon, password = decoded.partition(":")
        if not colon or not username or not password:
            raise AuthenticationError(
                "Basic credentials need a non-empty username and the repo token as password",
                code=Code.INVALID_REPO_TOKEN,
            )
        return password
    raise AuthenticationError(
        "Use a repo token: 'Authorization: Bearer <token>' or Basic with the token as password",
        code=Code.INVALID_REPO_TOKEN,
    )


@dataclass(frozen=True)
class AuthorizedGit:
    """A request that passed every check: the repo and the directory git will serve."""

    access: GitAccess
    service: Service
    git_dir: Path
    max_input_bytes: int | None = None  # pushes: pack bytes the storage limits still allow

    @property
    def repo(self) -> RepoRow:
        return self.access.repo


def _matches(target: GitTarget, repo: RepoRow) -> bool:
    return (
        repo.namespace == target.namespace
        and repo.name == target.repo
        and (target.account_id is None or target.account_id == repo.account_id)
    )


def authorize(
    backend: Backend, target: GitTarget, authorization: str | None, service: Service
) -> AuthorizedGit:
    """Decide a git request; raises the domain error that becomes its HTTP answer."""
    credential = credential_from(authorization)
    if credential is None:
        raise AuthenticationError("Authentication required: use a repo token",
                                  code=Code.AUTH_REQUIRED)
    access = repo_tokens.lookup(backend, credential)  # state is checked after the path
    if not _matches(target, access.repo):
        raise NotFound(NOT_FOUND_MESSAGE, code=Code.REPO_NOT_FOUND)
    state = token_state(access.token)
    if state != "active":
        raise AuthenticationError(f"Repo token is {state}", code=Code.INVALID_REPO_TOKEN)
    repo = access.repo
    repos.require_ready(repo)
    if service == "git-receive-pack":
        if repo.read_only:
            raise PermissionDenied(
                f"Repo {repo.namespace}/{repo.name} is read-only: pushes are refused",
                code=Code.REPO_READ_ONLY,
            )
        if not access.can_write:
            raise PermissionDenied(
                "This repo token has read scope: pushing needs a token with write scope",
                code=Code.PERMISSION_DENIED,
            )
        backend.repos.check_writable()
    git_dir = backend.repos.ensure(repo.id, repo.default_branch)
    return AuthorizedGit(access, service, git_dir)


def push_ref_problem(ref: str) -> str | None:
    """Why a pushed ref name is refused: git's rules, a ``refs/`` prefix, no ``-`` lead."""
    problem = ref_problem(ref)
    if problem is not None:
        return problem
    if not ref.startswith("refs/") or ref.count("/") < 2:
        return "must be a full ref name under refs/"
    if any(part.startswith("-") for part in ref.split("/")):
        return "no component may start with '-'"
    return None
