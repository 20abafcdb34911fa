"""Helpers for the SDK, CLI and credential-helper tests: environments, pushes, bad servers.

The "bad servers" are real sockets: one answers every request with a proxy's HTML 502, one
accepts connections and never answers (for timeouts).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.gitutil import Git, bearer
from tests.harness import Server

SCRIPTS = sysconfig.get_path("scripts")
PROXY_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def client_env(server: Server, home: Path, **extra: str) -> dict[str, str]:
    """An environment for the client commands: this server, no config file, no stray git config."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTIFACTD_", "GIT_"))}
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "ARTIFACTD_URL": server.url,
        "ARTIFACTD_ACCOUNT_ID": server.account_id,
        "ARTIFACTD_API_TOKEN": server.token,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Author",
        "GIT_COMMITTER_EMAIL": "author@example.com",
        "PATH": SCRIPTS + os.pathsep + os.environ.get("PATH", ""),
        "COLUMNS": "200",
    })
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str, input: str | None = None,
            cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "artifactd", *args], env=env, input=input, capture_output=True,
        text=True, timeout=timeout, cwd=cwd,
    )


def push_files(home: Path, remote: str, token: str, files: dict[str, str | bytes],
               message: str = "Initial commit", branch: str = "main") -> str:
    """Commit ``files`` in a fresh work tree and push them; returns the commit's sha."""
    git = Git(home)
    work = home / f"work-{os.urandom(3).hex()}"
    sha = git.new_work(work, files, message)
    if branch != "main":
        git.run("branch", "-M", branch, cwd=work)
    git.run("-c", bearer(token), "push", "-q", remote, f"HEAD:refs/heads/{branch}", cwd=work)
    return sha


class _Proxy502(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PROXY_502)))
        self.end_headers()
        self.wfile.write(PROXY_502)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def proxy_502() -> Iterator[str]:
    """A tiny HTTP server that answers everything like a proxy whose upstream is down."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy502)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _GitBackend(BaseHTTPRequestHandler):
    """Smart HTTP through ``git http-backend`` (CGI), no auth: an import source on loopback."""

    root: Path
    fail_fetch: bool = False
    delay: float = 0.0

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.command == "POST" and self.delay:
            time.sleep(self.delay)
        if self.fail_fetch and self.command == "POST":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        env = {
            "PATH": os.environ.get("PATH", ""), "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command, "PATH_INFO": path,
            "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": self.headers.get("git-protocol", ""),
        }
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                              timeout=60)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _cgi

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def git_source(root: Path, *, fail_fetch: bool = False, delay: float = 0.0) -> Iterator[str]:
    """Serve the bare repos under ``root`` over smart HTTP; yields the base URL.

    ``fail_fetch`` answers the fetch (POST) with 500; ``delay`` holds each POST that long.
    """
    handler = type("Handler", (_GitBackend,), {"root": root, "fail_fetch": fail_fetch, "delay": delay})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def make_source_repo(home: Path, root: Path, name: str, files: dict[str, str | bytes]) -> str:
    """A bare repo ``root/name.git`` holding one commit of ``files``; returns the commit's sha."""
    git = Git(home)
    work = home / f"src-{name}"
    sha = git.new_work(work, files, "Source commit")
    git.run("clone", "-q", "--bare", str(work), str(root / f"{name}.git"))
    return sha

