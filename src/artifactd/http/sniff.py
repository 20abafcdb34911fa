"""The ``Content-Type`` of ``raw`` responses: by file extension, else by the first bytes.

Repo content is user-controlled and a web dashboard shares this origin, so the rule is deny
by default: a type is sent as guessed only when no browser renders it as a document or runs
it (``INERT``: images other than SVG, audio, video, fonts, JSON, archives, and the plain text
types below). Every other type becomes ``text/plain`` when the bytes are text and
``application/octet-stream`` when they are not: HTML, XHTML, SVG, every ``+xml`` and XML
type (RSS, Atom, RDF, MathML, XSLT), ``message/rfc822`` and MHTML, JavaScript and CSS (which
a page of this origin could load as a script or a stylesheet), PDF (rendered by browsers'
own viewers, forms and scripts included) and anything unknown. Every raw response also
carries ``X-Content-Type-Options: nosniff`` and a sandboxing ``Content-Security-Policy``.
"""

from __future__ import annotations

import mimetypes

SNIFF_BYTES = 8192
# Substrings that mark a type a browser renders as a document whatever its family.
_DOCUMENT_MARKERS = ("xml", "html", "xsl", "svg", "rfc822", "mhtml", "javascript", "ecmascript")
_INERT_FAMILIES = ("image/", "audio/", "video/", "font/")
_INERT_TEXT = frozenset({"text/plain", "text/markdown", "text/csv", "text/tab-separated-values"})
_INERT_APPLICATION = frozenset({
    "application/json", "application/octet-stream", "application/wasm",
    "application/zip", "application/gzip", "application/x-gzip", "application/x-bzip2",
    "application/x-xz", "application/x-tar", "application/x-gtar", "application/zstd",
    "application/x-7z-compressed", "application/vnd.rar", "application/x-rar-compressed",
    "application/java-archive", "application/font-woff", "application/vnd.ms-fontobject",
})
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"\x7fELF", "application/octet-stream"),
)
# Text-bearing types that are not ``text/*``: sent as ``text/plain`` even for large files,
# whose first bytes are not at hand.
_TEXT_LIKE = {"application/javascript", "application/x-sh", "application/toml",
              "application/x-yaml", "application/yaml", "application/sql"}
_EXTRA = {".md": "text/markdown", ".toml": "application/toml", ".yaml": "application/yaml",
          ".yml": "application/yaml", ".ts": "text/plain", ".rs": "text/plain", ".go": "text/plain",
          ".webp": "image/webp", ".wasm": "application/wasm"}


def is_inert(kind: str) -> bool:
    """Whether a browser shows ``kind`` as media, data or a download, never as a document."""
    kind = kind.lower()
    if any(marker in kind for marker in _DOCUMENT_MARKERS):
        return False
    return kind in _INERT_TEXT or kind in _INERT_APPLICATION or kind.startswith(_INERT_FAMILIES)


def _is_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def sniff(path: str, head: bytes | None) -> str:
    """``head`` is the start of the file, or ``None`` when it is not at hand (large files)."""
    name = path.rsplit("/", 1)[-1].lower()
    dot = name.rfind(".")
    guessed = _EXTRA.get(name[dot:]) if dot > 0 else None
    if guessed is None:
        guessed = mimetypes.guess_type(name, strict=False)[0]
    if guessed is None and head is not None:
        for magic, kind in _MAGIC:
            if head.startswith(magic):
                guessed = kind
                break
        else:
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                guessed = "image/webp"
    text = head is not None and _is_text(head[:SNIFF_BYTES])
    if guessed is None or not is_inert(guessed):
        # A text type in a legacy encoding (no NUL, not UTF-8) is still text, without a charset.
        textual = guessed is not None and (
            guessed.startswith("text/") or guessed in _TEXT_LIKE or "xml" in guessed
        ) and (head is None or b"\0" not in head[:SNIFF_BYTES])
        guessed = "text/plain" if text or textual else "application/octet-stream"
    # Claim UTF-8 only when the bytes we saw are UTF-8; otherwise let the client decide.
    if text and (guessed.startswith("text/") or guessed == "application/json"):
        return f"{guessed}; charset=utf-8"
    return guessed
