"""Opaque, tamper-proof pagination cursors.

A cursor is ``base64url(json) + "." + base64url(hmac)``. The JSON holds the position (the
last row's sort value and id) and the query it belongs to (sort, direction, search), so a
cursor cannot be replayed against a different ordering. The HMAC key is the server secret
shared by every worker through the database; a cursor that fails the check, or belongs to
another query, is a 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from artifactd.errors import Code, ValidationError


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    def __init__(self, key: bytes):
        self._key = key

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, data: dict[str, Any]) -> str:
        payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def decode(self, cursor: str, expect: dict[str, Any]) -> dict[str, Any]:
        """Verify and return the cursor's data; ``expect`` must match the query's own keys."""
        invalid = ValidationError("Invalid cursor", code=Code.INVALID_CURSOR, pointer="/cursor")
        if len(cursor) > 2048 or cursor.count(".") != 1:
            raise invalid
        payload_text, signature_text = cursor.split(".")
        try:
            payload = _unb64(payload_text)
            signature = _unb64(signature_text)
        except (ValueError, TypeError):
            raise invalid from None
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise invalid
        try:
            data = json.loads(payload)
        except ValueError:
            raise invalid from None
        if not isinstance(data, dict):
            raise invalid
        for key, value in expect.items():
            if data.get(key) != value:
                raise ValidationError(
                    "Cursor belongs to a different query (sort, direction or search changed)",
                    code=Code.INVALID_CURSOR, pointer="/cursor",
                )
        return data
