"""Webhook receivers for the event benchmarks.

- ``NginxReceiver``: nginx answering ``204`` to every POST, in C with one worker: the
  reference receiver for the overhead figure, because the receiver is not what is measured
  and a Python receiver on the same two cores takes CPU from the server it measures.
- ``RecordingReceiver``: a uvicorn/httptools app in a child process that appends every
  event id it receives to a file (one line each, flushed before the answer), for runs that
  must check every event arrived (the kill -9 run).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import free_port

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 204; }}
  }}
}}
"""


def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(url, content=b"{}", timeout=1)
            return
        time.sleep(0.05)
    raise RuntimeError(f"receiver at {url} did not start")


class _Process:
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class NginxReceiver(_Process):
    def __init__(self, state: Path) -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (state / "nginx.conf").write_text(NGINX_CONF.format(dir=state, port=self.port))
        self.proc = subprocess.Popen(["nginx", "-c", str(state / "nginx.conf"), "-p", str(state)],
                                     stdout=subprocess.DEVNULL, start_new_session=True)
        _wait_up(self.url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


RECORDING_APP = r'''
import json, os, sys
out = open(sys.argv[1], "a", buffering=1)

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        event = json.loads(body)
        out.write(json.dumps([event.get("id"), event.get("type"),
                              event.get("source", {}).get("repoName"),
                              event.get("payload", {}).get("ref"),
                              event.get("payload", {}).get("after")]) + "\n")
    except ValueError:
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})

import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), http="httptools",
            log_level="warning", access_log=False)
'''


class RecordingReceiver(_Process):
    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", RECORDING_APP, str(log), str(self.port)],
                                     stdout=subprocess.DEVNULL, start_new_session=True)
        _wait_up(self.url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def lines(self) -> list[list[str | None]]:
        import json

        if not self.log.exists():
            return []
        rows = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
        return rows
