"""Blob sizes without their bytes: git protocol v2 ``object-info`` over smart HTTP.

A blobless clone has no blob sizes, and ``git cat-file --batch-check`` on a missing blob
downloads it (git 2.39 has no client for ``object-info``). So the mount asks the remote
itself: one ``command=object-info`` request per ``BATCH`` blobs (a few at once), answered from the
server's object store without building a pack. artifactd advertises it; a plain git
server does when ``transfer.advertiseObjectInfo`` is set. ``supported`` says whether the
remote does; when it does not, the mount fetches every blob once at mount time instead
(slower, but every ``stat`` is right).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from artifactd.fs.wire import Remote, WireError

BATCH = 2000
# The mount's bulk load: smaller requests, so that a read arriving meanwhile finds the
# server behind one short answer, not behind 2000 sizes (``activity.py``).
BULK_BATCH = 500
PARALLEL = 4
TIMEOUT = 60.0
HEADERS = {"Git-Protocol": "version=2"}
POST_HEADERS = {**HEADERS, "Content-Type": "application/x-git-upload-pack-request",
                "Accept": "application/x-git-upload-pack-result"}


class ObjectInfoError(RuntimeError):
    pass


def _pkt(line: str) -> bytes:
    data = line.encode()
    return f"{len(data) + 4:04x}".encode() + data


def _lines(body: bytes) -> list[bytes]:
    lines: list[bytes] = []
    at = 0
    while at + 4 <= len(body):
        length = int(body[at:at + 4], 16)
        if length < 4:  # flush, delimiter, response end
            at += 4
            continue
        lines.append(body[at + 4:at + length].rstrip(b"\n"))
        at += length
    return lines


def supported(remote: Remote) -> bool:
    try:
        status, body = remote.request("GET", "/info/refs?service=git-upload-pack", headers=HEADERS)
    except WireError as exc:
        raise ObjectInfoError(str(exc)) from exc
    if status in (401, 403):
        raise ObjectInfoError(f"the remote refused the credentials (HTTP {status}): "
                              "run add-repo again with a fresh token")
    if status != 200:
        raise ObjectInfoError(f"the remote answered HTTP {status} for its refs: check --remote")
    return any(line == b"object-info" or line.startswith(b"object-info=") for line in _lines(body))


def request_body(oids: list[str]) -> bytes:
    return (_pkt("command=object-info\n") + _pkt("agent=git/artifact-fs\n") + b"0001"
            + _pkt("size\n") + b"".join(_pkt(f"oid {oid}\n") for oid in oids) + b"0000")


def parse_answer(status: int, answer: bytes) -> dict[str, int]:
    """oid -> size of an ``object-info`` answer."""
    if status != 200:
        raise ObjectInfoError(f"object-info answered HTTP {status}")
    found = {}
    for line in _lines(answer):
        oid, _, size = line.decode().partition(" ")
        if size.isdigit():
            found[oid] = int(size)
    return found


def sizes(remote: Remote, oids: list[str], batch: int = BATCH,
          pace: Callable[[], None] | None = None) -> dict[str, int]:
    """Every size in ``oids``: ``batch`` per request, ``PARALLEL`` requests at once, the
    first over ``remote``'s connection (kept for the reads), the others over their own;
    ``pace`` (if given) is called before each request and may block."""
    found: dict[str, int] = {}
    extra = [Remote(remote.url, remote.auth, TIMEOUT) for _ in range(PARALLEL - 1)]

    def ask(connection: Remote, chunks: list[list[str]]) -> None:
        for chunk in chunks:
            if pace is not None:
                pace()
            status, answer = connection.request("POST", "/git-upload-pack", request_body(chunk), POST_HEADERS)
            found.update(parse_answer(status, answer))

    chunks = [oids[start:start + batch] for start in range(0, len(oids), batch)]
    connections = [remote, *extra][:max(1, len(chunks))]
    shares = [chunks[i::len(connections)] for i in range(len(connections))]
    try:
        if len(connections) == 1:
            ask(remote, chunks)
        else:
            with ThreadPoolExecutor(len(connections)) as pool:
                jobs = [pool.submit(ask, c, share) for c, share in zip(connections, shares, strict=True)]
                for done in jobs:
                    done.result()
    except WireError as exc:
        raise ObjectInfoError(f"object-info failed: {exc}") from exc
    finally:
        for connection in extra:
            connection.close()
    missing = [oid for oid in oids if oid not in found]
    if missing:
        raise ObjectInfoError(f"the remote gave no size for {len(missing)} blobs (first {missing[0]})")
    return found
