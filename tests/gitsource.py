"""A local git smart-HTTP server to import from: C ``git http-backend`` behind a tiny server.

There is no internet here, so import tests need a remote of their own. This one runs the
real ``git http-backend`` (CGI) for bare repos under ``root`` and has knobs for the
failure modes an import must survive:

- ``hold(repo)``: stall that repo's ``git-upload-pack`` POSTs until ``release(repo)``
  (an import that is "in progress" for as long as a test needs);
- ``fail(repo)``: answer that repo's upload-pack POSTs with HTTP 500;
- ``redirects[path] = location``: answer a GET of ``path`` with 302 to ``location``;
- ``pages[path] = (status, content type, body)``: answer with a fixed page (not git).
"""

from __future__ import annotations

import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class GitSource:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.redirects: dict[str, str] = {}
        self.pages: dict[str, tuple[int, str, bytes]] = {}
        self.failing: set[str] = set()
        self.requests: list[str] = []
        self._held: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold(self, repo: str) -> None:
        with self._lock:
            self._held[repo] = threading.Event()

    def release(self, repo: str) -> None:
        with self._lock:
            event = self._held.pop(repo, None)
        if event is not None:
            event.set()

    def fail(self, repo: str, failing: bool = True) -> None:
        (self.failing.add if failing else self.failing.discard)(repo)

    def count(self, fragment: str) -> int:
        return sum(1 for line in list(self.requests) if fragment in line)

    def start(self) -> GitSource:
        source = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                source._handle(self)

            def do_POST(self) -> None:
                source._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for repo in list(self._held):
            self.release(repo)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- request handling ------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        self.requests.append(f"{h.command} {h.path}")
        if parts.path in self.pages:
            status, kind, body = self.pages[parts.path]
            return self._reply(h, status, {"Content-Type": kind}, body)
        for prefix, location in self.redirects.items():
            if parts.path.startswith(prefix):
                rest = h.path[len(prefix):]
                return self._reply(h, 302, {"Location": location + rest}, b"")
        repo = parts.path.split(".git/")[0].lstrip("/") + ".git" if ".git/" in parts.path else ""
        body = self._body(h)
        if h.command == "POST" and parts.path.endswith("/git-upload-pack"):
            if repo.removesuffix(".git") in self.failing:
                return self._reply(h, 500, {"Content-Type": "text/plain"}, b"upstream exploded\n")
            with self._lock:
                held = self._held.get(repo.removesuffix(".git"))
            if held is not None:
                held.wait(timeout=120)
        self._cgi(h, parts.path, parts.query, body)

    @staticmethod
    def _body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    h.rfile.readline()
                    break
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
            return b"".join(chunks)
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    def _cgi(self, h: BaseHTTPRequestHandler, path: str, query: str, body: bytes) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "HOME": str(self.root),
            "REQUEST_METHOD": h.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": h.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.0",
        }
        if h.headers.get("Git-Protocol"):
            env["HTTP_GIT_PROTOCOL"] = h.headers["Git-Protocol"]
        if h.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = h.headers["Content-Encoding"]
        result = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                                timeout=120)
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = result.stdout.partition(b"\n\n")
        status = 200
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        self._reply(h, status, headers, payload)

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        try:
            h.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    h.send_header(name, value)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
