"""Repo tokens (``art_v1_<40 hex>?expires=<unix>``) and API tokens (``artd_<40 hex>``).

Both carry 160 random bits from ``secrets``. Only the SHA-256 of the secret is stored, and
look-up is by that hash, so a database dump does not hand out credentials. The plaintext is
returned once, at minting.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

REPO_TOKEN_PREFIX = "art_v1_"  # noqa: S105 - a format prefix, not a secret
API_TOKEN_PREFIX = "artd_"  # noqa: S105
_REPO_TOKEN = re.compile(r"art_v1_([0-9a-f]{40})(?:\?expires=([0-9]{1,12}))?")
_API_TOKEN = re.compile(r"artd_([0-9a-f]{40})")
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_secret() -> str:
    return secrets.token_hex(20)


def new_token_id() -> str:
    return secrets.token_hex(8)


def is_token_id(value: str) -> bool:
    return bool(_TOKEN_ID.fullmatch(value))


@dataclass(frozen=True)
class ParsedRepoToken:
    secret: str
    expires: int | None  # the ``?expires=`` suffix, if the caller sent it

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


def format_repo_token(secret: str, expires_unix: int) -> str:
    return f"{REPO_TOKEN_PREFIX}{secret}?expires={expires_unix}"


def parse_repo_token(text: str) -> ParsedRepoToken | None:
    """Accept the full token, the token without its suffix, or the bare 40-hex secret.

    The bare secret is what the spec's Basic-auth form puts in the password slot
    (``${ARTIFACTS_TOKEN%%\\?expires=*}`` keeps the ``art_v1_`` prefix; some tools strip it).
    """
    match = _REPO_TOKEN.fullmatch(text)
    if match:
        expires = int(match.group(2)) if match.group(2) is not None else None
        return ParsedRepoToken(match.group(1), expires)
    if re.fullmatch(r"[0-9a-f]{40}", text):
        return ParsedRepoToken(text, None)
    return None


def format_api_token(secret: str) -> str:
    return f"{API_TOKEN_PREFIX}{secret}"


def parse_api_token(text: str) -> str | None:
    match = _API_TOKEN.fullmatch(text)
    return match.group(1) if match else None
