"""Text the server writes, made safe: token-shaped strings redacted, lone surrogates replaced.

One function, ``redact``, for every place the server writes text a caller may have chosen
(a repo name in a path, a field echoed in an error message): the access log, error
envelopes, analytics events and the app logger (``RedactingFilter``). A client that puts a
credential where a name belongs (``GET .../repos/art_v1_<40 hex>``) must not see it copied
into logs or into analytics that other token holders of the account can query.

The patterns are broader than the parsers in ``services/access/tokens.py`` on purpose: either case
of hex, an ``?expires=`` suffix raw or percent-encoded, and no word boundary, so that a token
glued to other text is still caught. A bare 40-hex secret is not redacted: it cannot be told
apart from a commit id, and every content path carries those.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

# Repo tokens (``art_v1_<40 hex>?expires=<unix>``) and API tokens (``artd_<40 hex>``).
_TOKEN = re.compile(
    r"art_v1_[0-9a-fA-F]{40}(?:(?:\?|%3[fF])expires(?:=|%3[dD])[0-9]*)?"
    r"|artd_[0-9a-fA-F]{40}"
)
_PREFIXES = ("art_v1_", "artd_")
_UNWRITABLE = re.compile("[\x00\ud800-\udfff]")


def redact(text: str) -> str:
    """``text`` with every token-shaped run replaced by ``[redacted]``, made ``printable``."""
    if any(prefix in text for prefix in _PREFIXES):
        text = _TOKEN.sub(REDACTED, text)
    return printable(text)


def looks_like_token(text: str) -> bool:
    """Whether ``text`` holds a token-shaped run (names that do are refused at creation)."""
    return any(prefix in text for prefix in _PREFIXES) and _TOKEN.search(text) is not None


def printable(text: str) -> str:
    """``text`` with lone surrogates and U+0000 replaced by U+FFFD, so that any UTF-8 writer
    (a log stream, a PostgreSQL text column) takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _UNWRITABLE.sub("\ufffd", text)
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


_TEXT_EXTRAS = ("path", "repo", "route", "request_id", "client")


class RedactingFilter(logging.Filter):
    """A handler filter: the record's message, exception text and stack are redacted.

    The message is formatted here (``getMessage``) so that tokens in ``%s`` arguments are
    caught too; the exception text is rendered once and cached on the record, where
    ``logging.Formatter.format`` looks for it before rendering its own.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format call: log what there is rather than raise into the caller
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for name in _TEXT_EXTRAS:  # fields the request context and the access log add
            value = record.__dict__.get(name)
            if isinstance(value, str):
                record.__dict__[name] = redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
