"""HTTP-level guards, from raw sockets on loopback: head caps, timeouts, connection caps and
git slots that slow or silent clients cannot hold (issue 18 defects 5, 6, 7 and 16).

One server with lowered limits serves the whole module.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from artifactd.config import Settings
from artifactd.storage import objectreader
from tests.gitutil import Git, bearer, create_repo, pkt
from tests.harness import Server, start_server

MAX_CONNECTIONS = 40
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 3.0
WAIT = 20.0  # seconds a test waits for the server to act before it fails


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("guarded"), extra_env={
        "ARTIFACTD_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "ARTIFACTD_HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "ARTIFACTD_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "ARTIFACTD_HTTP_CONNECTION_RESERVE": "4",
        "ARTIFACTD_GIT_MAX_PROCESSES": "3",
        "ARTIFACTD_GIT_MAX_PROCESSES_PER_REPO": "1",
        "ARTIFACTD_GIT_QUEUE_TIMEOUT": "1",
    })
    yield server
    server.stop()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(WAIT)
    return sock


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what the server still takes: it may answer and close before the end."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The one response the server sends before it closes the connection."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), data[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def error_of(status: int, headers: dict[str, str], body: bytes) -> tuple[int, int]:
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    envelope = json.loads(body)
    assert envelope["success"] is False and envelope["result"] is None
    return status, envelope["errors"][0]["code"]


def refused(server: Server, raw: bytes) -> tuple[int, int]:
    sock = connect(server)
    send_quietly(sock, raw)
    return error_of(*read_answer(sock))


def test_long_request_target_is_414(guarded: Server) -> None:
    target = "/client/v4/" + "a" * 9000
    assert refused(guarded, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()) == (414, 11102)


def test_large_head_is_431_in_one_read_and_streamed(guarded: Server) -> None:
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n"
    assert refused(guarded, big) == (431, 11103)
    # A header line that never ends: refused once the cap is passed, not buffered forever.
    sock = connect(guarded)
    send_quietly(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ")
    for _ in range(64):  # up to 4 MiB, far past the 64 KiB cap
        sock.settimeout(0.0)
        try:
            answered = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            answered = b""
        sock.settimeout(WAIT)
        if answered:
            break
        send_quietly(sock, b"a" * (64 << 10))
    assert error_of(*read_answer(sock)) == (431, 11103)


def test_too_many_header_fields_is_431(guarded: Server) -> None:
    fields = "".join(f"X-F{n}: v\r\n" for n in range(101))
    assert refused(guarded, f"GET /metrics HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode()) == (
        431, 11103)
    fields = "".join(f"X-F{n}: v\r\n" for n in range(90))  # under the cap: served
    sock = connect(guarded)
    sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{fields}\r\n".encode())
    assert read_answer(sock)[0] == 200


def test_malformed_requests_get_envelopes(guarded: Server) -> None:
    assert refused(guarded, b"FOO /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == (400, 11100)
    assert refused(guarded, b"GET /metrics HTTP/9.9 junk\r\n\r\n") == (400, 11100)


def test_incomplete_head_times_out_with_408(guarded: Server) -> None:
    assert refused(guarded, b"GET /metrics HTTP/1.1\r\nHost: x\r\n") == (408, 11101)


def test_stalled_body_times_out_with_408(guarded: Server) -> None:
    path = f"/client/v4/accounts/{guarded.account_id}/artifacts/namespaces/default/repos"
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {guarded.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    assert refused(guarded, head.encode() + b'{"name": ') == (408, 11101)


def guard_closes(server: Server) -> float:
    return sum(server.metric(f'artifactd_http_guard_refusals_total{{reason="{reason}"}}')
               for reason in ("displaced", "idle_timeout", "head_timeout", "busy"))


def test_silent_and_half_open_connections_are_closed_and_metrics_answer(guarded: Server) -> None:
    closed_before = guard_closes(guarded)
    socks = [connect(guarded) for _ in range(200)]  # five times the connection cap
    for sock in socks[:100]:
        send_quietly(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    # Every new connection displaces the oldest one without a request in progress.
    assert httpx.get(f"{guarded.url}/metrics", timeout=WAIT).status_code == 200
    with guarded.client() as c:
        assert c.get("/repos").status_code == 200
    answers: dict[bytes, int] = {}
    for sock in socks:  # each ends: timed out (408), displaced, or closed unanswered
        try:
            first = sock.recv(12)
        except ConnectionResetError:
            first = b"reset"
        answers[first] = answers.get(first, 0) + 1
        sock.close()
    assert set(answers) <= {b"", b"reset", b"HTTP/1.1 408"}, answers
    # Each one was closed by a guard, and counted by reason.
    assert guard_closes(guarded) - closed_before >= len(socks)
    assert httpx.get(f"{guarded.url}/metrics", timeout=WAIT).status_code == 200


def test_when_every_connection_is_busy_the_reserve_serves_metrics(guarded: Server) -> None:
    """Connections with a request in progress are never displaced; beyond the cap, new ones
    may still reach /metrics, and anything else gets 503 (issue 18 defect 6)."""
    path = f"/client/v4/accounts/{guarded.account_id}/artifacts/namespaces/default/repos"
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {guarded.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n").encode()
    busy = [connect(guarded) for _ in range(MAX_CONNECTIONS)]
    for sock in busy:
        sock.sendall(head + b"{")
    done = threading.Event()

    def trickle() -> None:  # a byte now and then: the bodies never complete nor time out
        while not done.wait(BODY_TIMEOUT / 6):
            for sock in busy:
                send_quietly(sock, b" ")

    feeder = threading.Thread(target=trickle)
    feeder.start()
    try:
        assert httpx.get(f"{guarded.url}/metrics", timeout=WAIT).status_code == 200
        r = httpx.get(f"{guarded.url}{path}", headers={"Authorization": f"Bearer {guarded.token}"},
                      timeout=WAIT)
        assert r.status_code == 503 and r.json()["errors"][0]["code"] == 11080
        assert r.headers["retry-after"] == "5"
    finally:
        done.set()
        feeder.join()
        for sock in busy:
            sock.close()


def test_early_413_lets_the_client_finish_sending_and_read_it(guarded: Server) -> None:
    """A body over ``max_body_bytes`` on a ``Connection: close`` request: the server answers
    413 before reading the body, and must not reset the connection under the client."""
    path = f"/client/v4/accounts/{guarded.account_id}/artifacts/namespaces/default/repos"
    body = b"x" * (3 << 20)
    sock = connect(guarded)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  f"Authorization: Bearer {guarded.token}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n").encode())
    sock.sendall(body)  # the old server closed at once: EPIPE or a reset here
    status, _headers, answer = read_answer(sock)
    assert status == 413 and json.loads(answer)["errors"][0]["code"] == 11005


# -- git slots -----------------------------------------------------------------------------


def stalled_upload_pack(server: Server, remote: str, token: str, first_bytes: bytes) -> socket.socket:
    """A git-upload-pack POST that announces a body and sends only ``first_bytes`` of it."""
    path = remote.removeprefix(server.url) + "/git-upload-pack"
    sock = connect(server)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  "Content-Type: application/x-git-upload-pack-request\r\n"
                  "Content-Length: 100000\r\n\r\n").encode() + first_bytes)
    return sock


def wait_for_metric(server: Server, series: str, value: float) -> None:
    deadline = time.monotonic() + WAIT
    while server.metric(series) != value:
        assert time.monotonic() < deadline, f"{series} never reached {value}"
        time.sleep(0.05)


def test_slow_bodies_do_not_starve_git(guarded: Server, tmp_path: Path, unique_name: str) -> None:
    git = Git(tmp_path / "home")
    slow = create_repo(guarded, f"slow-{unique_name}")
    other = create_repo(guarded, f"other-{unique_name}")
    for repo in (slow, other):
        work = tmp_path / f"work-{repo.name}"
        git.new_work(work)
        git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=work)
    read = slow.mint("read")["plaintext"]
    # Ten requests that send nothing after their headers hold no git slot...
    silent = [stalled_upload_pack(guarded, slow.remote, read, b"") for _ in range(10)]
    git.run("-c", bearer(slow.mint("read")["plaintext"]), "clone", slow.remote,
            str(tmp_path / "c1"))
    # ...and ten that send enough to start git, then stall, hold at most the repo's share
    # (1 of 3 slots here): the others wait for it, then get 503.
    main = slow.refs()["refs/heads/main"]
    # Haves git does not know: it answers nothing (no ACK) until the request is complete.
    first = pkt(f"want {main}\n") + b"0000" + pkt(f"have {'1' * 40}\n") * 1500
    started = [stalled_upload_pack(guarded, slow.remote, read, first) for _ in range(10)]
    wait_for_metric(guarded, "artifactd_git_processes", 1)
    git.run("-c", bearer(other.token), "clone", other.remote, str(tmp_path / "c2"))
    # Every stalled request ends: 408 from the body timeout, or 503 waiting for the share.
    statuses = {read_answer(sock)[0] for sock in silent + started}
    assert statuses <= {408, 503}, statuses
    wait_for_metric(guarded, "artifactd_git_processes", 0)


def test_serve_raises_the_open_file_limit_the_caps_need() -> None:
    """1,100 half-open connections used to exhaust a 1,024-descriptor worker."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("the hard open-file limit is too low to raise the soft one")
    code = ("import resource\nfrom artifactd.config import Settings\n"
            "from artifactd.http.protocol import ensure_descriptor_budget\n"
            "print(ensure_descriptor_budget(Settings(http_max_connections=1500)))\n"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    )
    warning, raised = result.stdout.split("\n")[:2]
    assert warning == "None"
    # content reads keep up to content_reader_max_repos repos open, each with a few
    # descriptors; as far as the hard limit allows
    reads = objectreader.DESCRIPTORS_PER_HANDLE * Settings().content_reader_max_repos
    wanted = 1500 + 32 + 4 * 32 + 64 + reads
    assert int(raised) == (wanted if hard == resource.RLIM_INFINITY else min(hard, wanted))


def test_the_content_reader_keeps_as_many_repos_open_as_the_file_limit_leaves_room_for() -> None:
    """Past the descriptors connections and git need, two per open repo; never fewer than
    MIN_HANDLES, never more than the setting."""
    code = ("from artifactd.config import Settings\n"
            "from artifactd.services.descriptors import reader_repo_budget\n"
            "print(reader_repo_budget(Settings()), reader_repo_budget(Settings("
            "content_reader_max_repos=100)), reader_repo_budget(Settings("
            "http_max_connections=5000)))\n")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip("the hard open-file limit is below the one this test sets")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard)),
    )
    default, small, crowded = (int(x) for x in result.stdout.split())
    assert default == (4096 - (512 + 32 + 4 * 32 + 64)) // objectreader.DESCRIPTORS_PER_HANDLE
    assert small == 100
    assert crowded == objectreader.MIN_HANDLES  # 5,000 connections leave no room
