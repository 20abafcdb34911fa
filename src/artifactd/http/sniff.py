"""The ``Content-Type`` of ``raw`` responses: by file extension, else by the first bytes.

Types a browser would execute or render as a document (HTML, XHTML, SVG, XML) are sent as
``text/plain`` instead, and every raw response carries ``X-Content-Type-Options: nosniff``
and a sandboxing ``Content-Security-Policy``: repo content is user-controlled, and the API
origin must never run it. This is what raw file hosts such as raw.githubusercontent.com do.
"""

from __future__ import annotations

import mimetypes

SNIFF_BYTES = 8192
_ACTIVE = {
    "text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml",
    "text/xsl", "application/xslt+xml",
}
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
_TEXT_LIKE = {"application/json", "application/javascript", "application/x-sh", "application/toml",
              "application/x-yaml", "application/yaml", "application/sql"}
_EXTRA = {".md": "text/markdown", ".toml": "application/toml", ".yaml": "application/yaml",
          ".yml": "application/yaml", ".ts": "text/plain", ".rs": "text/plain", ".go": "text/plain",
          ".webp": "image/webp", ".wasm": "application/wasm"}


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
    if guessed in _ACTIVE:
        guessed = "text/plain"
    if guessed is None and head is not None:
        for magic, kind in _MAGIC:
            if head.startswith(magic):
                return kind
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return "image/webp"
        guessed = "text/plain" if _is_text(head[:SNIFF_BYTES]) else None
    if guessed is None:
        return "application/octet-stream"
    # Claim UTF-8 only when the bytes we saw are UTF-8; otherwise let the client decide.
    textual = guessed.startswith("text/") or guessed in _TEXT_LIKE
    if textual and head is not None and _is_text(head[:SNIFF_BYTES]):
        return f"{guessed}; charset=utf-8"
    return guessed
