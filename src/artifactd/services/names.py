"""Validation of namespace names, repo names and branch names.

Namespace and repo names follow the spec: a letter or digit, then letters, digits, ``.``,
``_`` or ``-``. We add a maximum of 64 characters (documented in docs/api.md). Only ASCII
is accepted: these names appear in URLs and logs where look-alike characters would mislead.
A name that looks like a token is refused too: the server redacts such strings from
everything it writes (``artifactd.redact``), so the repo could not be told apart in logs and
analytics, and the caller most likely pasted a credential where a name belongs.
"""

from __future__ import annotations

import re

from artifactd.errors import Code, ValidationError
from artifactd.redact import looks_like_token

MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def name_problem(value: object) -> str | None:
    """Why ``value`` is not a valid namespace or repo name, or ``None`` when it is."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters"
    if not value.isascii() or not _NAME.fullmatch(value):
        return ("must start with a letter or digit and contain only letters, digits, "
                "'.', '_' and '-'")
    if looks_like_token(value):
        return "must not look like an API or repo token (art_v1_<40 hex>, artd_<40 hex>)"
    return None


def check_name(value: object, field: str, what: str = "name") -> str:
    problem = name_problem(value)
    if problem is not None:
        # A repo name has its own published code (INVALID_REPO_NAME); other names do not.
        code = Code.INVALID_REPO_NAME if what == "repo name" else Code.INVALID_INPUT
        raise ValidationError(f"Invalid {what}: {problem}", code=code, pointer=f"/{field}")
    assert isinstance(value, str)
    return value


MAX_REF_LENGTH = 255
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def ref_problem(ref: str) -> str | None:
    """Apply git's ``check-ref-format`` rules to a ref name (``refs/...`` or a short name).

    Also refuses a leading ``-`` so that a ref can never be read as a git option.
    """
    if not ref:
        return "must not be empty"
    if len(ref) > MAX_REF_LENGTH:
        return f"must be at most {MAX_REF_LENGTH} characters"
    if ref.startswith("-"):
        return "must not start with '-'"
    if _REF_FORBIDDEN.search(ref):
        return "contains a control character, space or one of ~^:?*[\\"
    if ".." in ref or "@{" in ref or ref == "@" or "//" in ref:
        return "must not contain '..', '@{' or '//', nor be '@'"
    if ref.startswith("/") or ref.endswith("/") or ref.endswith("."):
        return "must not start or end with '/' nor end with '.'"
    for component in ref.split("/"):
        if component.startswith(".") or component.endswith(".lock"):
            return "no component may start with '.' or end with '.lock'"
    return None


def check_branch(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError("Invalid branch name: must be a string", pointer=f"/{field}")
    problem = ref_problem(value)
    if problem is None and value.startswith("refs/"):
        problem = "give the short branch name, without 'refs/'"
    if problem is not None:
        raise ValidationError(f"Invalid branch name: {problem}", pointer=f"/{field}")
    return value
