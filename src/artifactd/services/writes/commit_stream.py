"""Large commits as a stream: an NDJSON body, one JSON object per line.

The first line is the commit's header (every field of ``POST .../commits`` but ``changes``);
each further line is one change, exactly as in ``changes``. Contents are decoded and spooled
to the write's work area line by line, so the server holds one line at a time (at most
``MAX_LINE_BYTES``), never the whole body; the storage limit is checked as bytes arrive.
Pointers of errors name the line's change as in the JSON form: ``/changes/<n>/...``
(``n`` counts changes from 0, so it is the body's line number minus 2).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from artifactd.errors import Code, PayloadTooLarge, StorageLimitExceeded, ValidationError
from artifactd.models import CommitRequest, FileChange
from artifactd.services import limits
from artifactd.services.backend import Backend
from artifactd.services.writes import commits, write_access

MAX_LINE_BYTES = 64 << 20  # one change's line: its content, base64 or JSON-escaped


class _Header(CommitRequest):
    changes: list[FileChange] = []


def _model(line: bytes, model: type[BaseModel], prefix: str) -> Any:
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(f"Line for {prefix or 'the header'} is not valid JSON",
                              code=Code.MALFORMED_JSON, pointer=prefix or None) from None
    if not isinstance(data, dict):
        raise ValidationError("Each line must be a JSON object", code=Code.MALFORMED_JSON,
                              pointer=prefix or None)
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        pointer = prefix + "".join(f"/{part}" for part in first["loc"])
        message = "Unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise ValidationError(f"Invalid field {pointer}: {message}", pointer=pointer) from None


async def lines(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The non-empty lines of a body, each at most ``MAX_LINE_BYTES``."""
    pending = bytearray()
    async for chunk in body:
        pending += chunk
        while True:
            end = pending.find(b"\n")
            if end < 0:
                break
            line = bytes(pending[:end]).strip()
            del pending[:end + 1]
            if line:
                yield line
        if len(pending) > MAX_LINE_BYTES:
            raise PayloadTooLarge(f"An NDJSON line is longer than {MAX_LINE_BYTES} bytes")
    if bytes(pending).strip():
        yield bytes(pending).strip()


async def read_commit(backend: Backend, target: write_access.WriteTarget,
                      body: AsyncIterator[bytes]) -> commits.CommitSpec:
    """Parse and spool an NDJSON commit into ``target``'s work area."""
    spec: commits.CommitSpec | None = None
    room = limits.remaining_bytes(backend, target.repo)
    used = 0
    async for line in lines(body):
        if spec is None:
            header = _model(line, _Header, "")
            if header.changes:
                raise ValidationError("In NDJSON, changes come one per line after the header",
                                      pointer="/changes")
            spec = commits.spec_header(header)
            continue
        index = len(spec.changes)
        commits.check_count(index + 1)
        raw = _model(line, FileChange, f"/changes/{index}")
        change = commits.check_change(raw, index)
        if change.op == "put":
            data = commits.decode_content(raw, change.pointer)
            used += len(data)
            if used > room:
                limits.check_storage(backend, target.repo, used)
                raise StorageLimitExceeded("Storage limit reached", code=Code.STORAGE_LIMIT)
            commits.spool(change, data, write_access.work_dir(target))
        spec.changes.append(change)
    if spec is None:
        raise ValidationError("Request body must start with the commit's header line",
                              code=Code.MALFORMED_JSON)
    if not spec.changes:
        raise ValidationError("changes must not be empty", code=Code.INVALID_CHANGE,
                              pointer="/changes")
    return spec
