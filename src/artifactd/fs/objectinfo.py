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

from concurrent.futures import ThreadPoolExecutor

import httpx

BATCH = 2000
PARALLEL = 4
TIMEOUT = 60.0
HEADERS = {"Git-Protocol": "version=2", "User-Agent": "git/artifact-fs"}


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


def _client(auth: tuple[str, str] | None) -> httpx.Client:
    return httpx.Client(headers=HEADERS, auth=auth, timeout=TIMEOUT, follow_redirects=False)


def supported(url: str, auth: tuple[str, str] | None) -> bool:
    with _client(auth) as client:
        response = client.get(f"{url}/info/refs", params={"service": "git-upload-pack"})
    if response.status_code in (401, 403):
        raise ObjectInfoError(f"the remote refused the credentials (HTTP {response.status_code}): "
                              "run add-repo again with a fresh token")
    response.raise_for_status()
    lines = _lines(response.content)
    return any(line == b"object-info" or line.startswith(b"object-info=") for line in lines)


def sizes(url: str, auth: tuple[str, str] | None, oids: list[str]) -> dict[str, int]:
    """Every size in ``oids``; ``PARALLEL`` requests at once over kept-alive connections."""
    found: dict[str, int] = {}

    def ask(client: httpx.Client, chunk: list[str]) -> None:
        body = (_pkt("command=object-info\n") + _pkt("agent=git/artifact-fs\n") + b"0001"
                + _pkt("size\n") + b"".join(_pkt(f"oid {oid}\n") for oid in chunk) + b"0000")
        response = client.post(f"{url}/git-upload-pack", content=body, headers={
            "Content-Type": "application/x-git-upload-pack-request",
            "Accept": "application/x-git-upload-pack-result"})
        response.raise_for_status()
        for line in _lines(response.content):
            oid, _, size = line.decode().partition(" ")
            if size.isdigit():
                found[oid] = int(size)

    chunks = [oids[start:start + BATCH] for start in range(0, len(oids), BATCH)]
    with _client(auth) as client, ThreadPoolExecutor(PARALLEL) as pool:
        for done in [pool.submit(ask, client, chunk) for chunk in chunks]:
            done.result()
    missing = [oid for oid in oids if oid not in found]
    if missing:
        raise ObjectInfoError(f"the remote gave no size for {len(missing)} blobs (first {missing[0]})")
    return found
