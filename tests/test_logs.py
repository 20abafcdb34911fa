"""``--log-format json``: every line the server writes is one JSON object; request ids; no secrets.

One server with JSON logs serves every test here; each test finds its own lines by the
request id it sent (or the one the server echoed).
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactd.config import unknown_environment
from artifactd.logs import safe_request_id
from tests.gitutil import Git, basic_remote, create_repo, pkt, rpc
from tests.harness import Server, start_server


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("data-jsonlog"), args=("--log-format", "json"))
    yield server
    server.stop()


def records(server: Server) -> list[dict[str, Any]]:
    """Every line of the server's output, each parsed as JSON (a line that is not fails)."""
    parsed = []
    for line in server.log_text().splitlines():
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not one JSON object: {line!r}")
    return parsed


def wait_for(server: Server, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first record ``match`` accepts; the access line is written just after the answer."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [r for r in records(server) if match(r)]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no such log record in:\n{server.log_text()[-4000:]}")


def access_line(server: Server, request_id: str) -> dict[str, Any]:
    return wait_for(server, lambda r: r.get("logger") == "artifactd.access" and r.get("request_id") == request_id)


def test_every_line_is_json_with_timestamp_level_and_logger(json_server: Server) -> None:
    with json_server.client() as c:
        c.get("/repos", headers={"X-Request-Id": "every-line-1"})
    access_line(json_server, "every-line-1")
    lines = records(json_server)
    # The start-up banner is log records too, not plain text before the JSON.
    assert any("listening on http://127.0.0.1:" in r["message"] for r in lines)
    for record in lines:
        assert {"timestamp", "level", "logger", "message"} <= record.keys(), record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", record["timestamp"])


def test_access_line_fields_and_request_id_echo(json_server: Server) -> None:
    with json_server.client() as c:
        response = c.get("/repos/no-such-repo", headers={"X-Request-Id": "req-42.a:b"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "req-42.a:b"
    record = access_line(json_server, "req-42.a:b")
    assert record["level"] == "INFO"
    assert record["method"] == "GET"
    assert record["path"].endswith("/namespaces/default/repos/no-such-repo")
    assert record["status"] == 404
    assert record["route"] == "control"
    assert record["client"] == "127.0.0.1"
    assert isinstance(record["duration_ms"], int | float) and record["duration_ms"] >= 0


@pytest.mark.parametrize(
    "supplied", ["has space", "x" * 129, "quote\"d", "semi;colon", "", "artd_" + "7" * 40, "art_v1_" + "7" * 40],
)
def test_unsafe_request_id_is_replaced_by_a_generated_one(json_server: Server, supplied: str) -> None:
    with json_server.client() as c:
        response = c.get("/repos", headers={"X-Request-Id": supplied})
    generated = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    record = access_line(json_server, generated)
    if supplied:
        assert supplied not in json.dumps(record)


def test_request_without_id_gets_a_generated_one(json_server: Server) -> None:
    first = httpx.get(json_server.url + "/no/such/route")
    second = httpx.get(json_server.url + "/no/such/route")
    assert first.status_code == 404
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert access_line(json_server, first.headers["x-request-id"])["route"] == "other"


def test_git_lines_carry_the_repo_and_never_a_token(json_server: Server, tmp_path: Path) -> None:
    repo = create_repo(json_server, "json-log-git")
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    git.new_work(work, {"README.md": "hi\n"})
    remote = basic_remote(repo.remote, repo.token)
    git.run("push", "-q", remote, "main", cwd=work)
    git.run("clone", "-q", remote, str(tmp_path / "clone"))
    # Tokens in every place a client may put them: Bearer and Basic headers, a query string.
    secret = repo.token.split("?expires=")[0]
    httpx.get(repo.remote + "/info/refs?service=git-upload-pack",
              headers={"Authorization": f"Bearer {repo.token}", "X-Request-Id": "git-bearer"})
    httpx.get(f"{json_server.ns_url()}/repos?token={json_server.token}",
              headers={"Authorization": f"Bearer {json_server.token}", "X-Request-Id": "query-token"})
    record = access_line(json_server, "git-bearer")
    assert record["route"] == "git"
    assert record["repo"].endswith("json-log-git")
    access_line(json_server, "query-token")
    text = json_server.log_text()
    for forbidden in (secret.removeprefix("art_v1_"), json_server.token.removeprefix("artd_"),
                      "Authorization", "Bearer", "Basic "):
        assert forbidden not in text


def test_uvicorn_messages_are_json_too(json_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", json_server.port)) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        sock.recv(1024)
    record = wait_for(json_server, lambda r: r["logger"].startswith("uvicorn"))
    assert record["level"] == "WARNING"


@given(st.text(max_size=200))
def test_safe_request_id_keeps_only_safe_values(supplied: str) -> None:
    result = safe_request_id(supplied)
    assert re.fullmatch(r"[A-Za-z0-9._:@/+=-]{1,128}", result)
    assert result == supplied or re.fullmatch(r"[0-9a-f]{32}", result)
    assert not result.startswith(("artd_", "art_v1_"))


def test_unknown_environment_suggests_the_closest_setting() -> None:
    warnings = unknown_environment({
        "ARTIFACTD_GIT_MAX_PROCESS": "4", "ARTIFACTD_PORT": "1", "ARTIFACTD_API_TOKEN": "x", "PATH": "/bin",
    })
    assert warnings == [
        "unknown environment variable ARTIFACTD_GIT_MAX_PROCESS is ignored "
        "(did you mean ARTIFACTD_GIT_MAX_PROCESSES?)"
    ]


def test_application_lines_inside_a_request_carry_its_id_and_repo(json_server: Server, tmp_path: Path) -> None:
    repo = create_repo(json_server, "json-log-refused")
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    git.new_work(work, {"README.md": "hi\n"})
    git.run("push", "-q", basic_remote(repo.remote, repo.token), "main", cwd=work)
    # upload-pack (protocol v2) dies on an unknown command before it writes a byte; the
    # server logs git's reason.
    body = pkt("command=no-such-command\n") + b"0000"
    refused = rpc(repo.remote, "git-upload-pack", body, f"Bearer {repo.token}",
                  **{"X-Request-Id": "refused-1", "Git-Protocol": "version=2"})
    assert refused.status_code >= 400, refused.text
    record = wait_for(json_server, lambda r: r["logger"] == "artifactd.git" and r.get("request_id") == "refused-1")
    assert record["route"] == "git"
    assert record["repo"].endswith("json-log-refused")
    assert repo.token.split("?")[0] not in json_server.log_text()


def test_a_blocked_stderr_does_not_block_the_logging_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """The access log is written on the event loop: a ``write`` to a stderr that does not
    drain (a full pipe, a file in the kernel's dirty-page throttling) must not hold the
    caller. Every record still arrives, in order, once stderr drains."""
    import logging
    import logging.config
    import os
    import threading

    from artifactd.config import Settings
    from artifactd.logs import logging_config

    read_end, write_end = os.pipe()
    stderr = os.fdopen(write_end, "w", buffering=1)
    monkeypatch.setattr("sys.stderr", stderr)
    logging.config.dictConfig(logging_config(Settings()))
    lines = 2000  # about 200 KB: several times a pipe's 64 KiB buffer
    done = threading.Event()

    def log_all() -> None:
        for i in range(lines):
            logging.getLogger("artifactd.test").info("line %d %s", i, "x" * 80)
        done.set()

    writer = threading.Thread(target=log_all, daemon=True)
    writer.start()
    try:
        # Nothing has read the pipe yet: a direct write would be stuck in it.
        assert done.wait(30), "logging blocked on a stderr that does not drain"
    finally:
        received = bytearray()
        reader = threading.Thread(target=lambda: received.extend(_read_all(read_end)))
        reader.start()
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
        stderr.close()
        reader.join(30)
    numbers = [int(m) for m in re.findall(rb"line (\d+) x", bytes(received))]
    assert numbers == list(range(lines))


def _read_all(fd: int) -> bytes:
    import os

    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)
