"""Request JSON and request text, checked at the boundary so that no handler sees bad text.

``json.loads`` accepts things no field of ours can hold and that fail deep inside the server
(a 500) if they get through: nesting deep enough to exhaust the parser's recursion limit,
lone surrogates (``"\\ud800"``: valid JSON, but no UTF-8 writer, database driver or response
encoder accepts them), U+0000 (PostgreSQL text columns refuse it), and the non-standard
``NaN``/``Infinity`` literals. ``load_json`` refuses all of them with a ``ValidationError``
that names the field; ``check_text`` does the same for query and path parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from artifactd.errors import Code, ValidationError
from artifactd.redact import printable

# Our deepest legitimate body is a GraphQL request whose variables nest filters a few levels;
# 32 leaves room for that and keeps walking a hostile body cheap.
MAX_DEPTH = 32


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(raw: bytes, *, check: bool = True) -> Any:
    """Parse ``raw``; raise ``ValidationError`` (code 11003 for syntax, 10100 for text) on
    anything a handler could not safely use. ``check=False`` leaves the text rules to the
    caller (``check_tree`` on the part it reads)."""
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise ValidationError(f"Malformed JSON: nested deeper than {MAX_DEPTH} levels",
                              code=Code.MALFORMED_JSON) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"Malformed JSON: {exc}", code=Code.MALFORMED_JSON) from None
    if check:
        _check_tree(data)
    return data


def check_tree(data: Any) -> None:
    """The text and depth rules of ``load_json`` on an already parsed value."""
    _check_tree(data)


def _pointer(parts: tuple[str, ...]) -> str:
    return "".join("/" + printable(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _check_tree(data: Any) -> None:
    # Iterative, so that the walk itself cannot hit the recursion limit.
    pending: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while pending:
        value, parts = pending.pop()
        if len(parts) > MAX_DEPTH:
            raise ValidationError(f"Malformed JSON: nested deeper than {MAX_DEPTH} levels",
                                  code=Code.MALFORMED_JSON)
        if isinstance(value, str):
            _check_string(value, _pointer(parts) or "/")
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_string(key, _pointer(parts) or "/", name=True)
                pending.append((item, (*parts, key)))
        elif isinstance(value, list):
            pending.extend((item, (*parts, str(index))) for index, item in enumerate(value))


def _check_string(text: str, pointer: str, *, name: bool = False) -> None:
    what = f"field name in {pointer}" if name else f"field {pointer}"
    if "\x00" in text:
        raise ValidationError(f"Invalid {what}: text must not contain U+0000", pointer=pointer)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"Invalid {what}: text must be valid Unicode (it has a lone surrogate such as \\ud800)",
            pointer=pointer,
        ) from None


def check_text(params: Mapping[str, str]) -> None:
    """Query or path parameters: the same text rules as JSON strings."""
    for key, value in params.items():
        _check_string(key, "/", name=True)
        _check_string(value, "/" + printable(key))
