"""HTML rendering for the dashboard: the Jinja2 environment, filters, and the headers every
page carries (a strict Content-Security-Policy: every asset from this origin, no inline
script or style)."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound
from starlette.responses import HTMLResponse

from artifactd.services.clock import iso

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show what a token may see: never from a shared cache
}
HIGHLIGHT_MAX = 512 << 10  # bytes of text highlighted; larger text files are shown plain
SHOW_MAX = 1 << 20  # bytes of text shown at all; larger files are offered as a download
LINE_MAX = 10_000  # characters of one line shown; a longer line is cut with a mark
# Bidirectional controls reorder what a reader sees (Trojan Source): shown as escapes.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")

_templates = Environment(
    loader=PackageLoader("artifactd.http.dashboard", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
FORMATTER = HtmlFormatter(linenos="table", cssclass="hl", anchorlinenos=True, lineanchors="L")


def reveal(text: object) -> str:
    """``text`` with bidi controls made visible (``<U+202E>``); still to be escaped."""
    return _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", "" if text is None else str(text))


def cut_lines(text: str) -> str:
    return "\n".join(
        line if len(line) <= LINE_MAX else line[:LINE_MAX] + " [line cut]" for line in text.split("\n")
    )


class HighlightCache:
    """Highlighted HTML by (blob id, file name): a blob id names its bytes forever, so a page
    seen again skips Pygments (tens of ms for a few hundred lines). Bounded by total size."""

    def __init__(self, max_bytes: int = 32 << 20):
        self.max_bytes = max_bytes
        self.size = 0
        self.items: OrderedDict[tuple[str, str], Markup] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Markup | None:
        with self.lock:
            found = self.items.get(key)
            if found is not None:
                self.items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], value: Markup) -> None:
        with self.lock:
            if key in self.items or len(value) > self.max_bytes // 4:
                return
            self.items[key] = value
            self.size += len(value)
            while self.size > self.max_bytes:
                _, dropped = self.items.popitem(last=False)
                self.size -= len(dropped)


HIGHLIGHTS = HighlightCache()


def highlighted(path: str, text: str) -> Markup:
    """Pygments HTML of ``text``: it escapes every character of the file itself."""
    clean = cut_lines(reveal(text))
    try:
        # By file name only: guessing from content tries every lexer (tens of ms per page).
        lexer = get_lexer_for_filename(path) if len(clean) <= HIGHLIGHT_MAX else TextLexer()
    except ClassNotFound:
        lexer = TextLexer()
    return Markup(highlight(clean, lexer, FORMATTER))  # noqa: S704  # pygments escapes its input


def human_size(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def when(us: int | None) -> str:
    return (iso(us) or "never")[:19].replace("T", " ") if us else "never"


def query(**params: Any) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


def seg(value: str) -> str:
    return quote(value, safe="")


_templates.filters["reveal"] = lambda v: escape(reveal(v))
_templates.filters["size"] = human_size
_templates.filters["when"] = when
_templates.filters["seg"] = seg
_templates.globals["query"] = query


def page(template: str, status: int = 200, headers: dict[str, str] | None = None,
         **context: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})


def pygments_css() -> str:
    return str(FORMATTER.get_style_defs(".hl"))  # type: ignore[no-untyped-call]
