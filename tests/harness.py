"""Real servers for tests: an ``artifactd serve`` process on a free port, and PostgreSQL.

Nothing here is mocked: the server is the installed console script, the database is a real
SQLite file or a real PostgreSQL cluster created with the machine's ``initdb``/``pg_ctl``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PG_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def die_with_parent() -> None:
    """In a child before exec: SIGKILL it when the process (thread) that started it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def artifactd_cmd() -> list[str]:
    return [sys.executable, "-m", "artifactd"]


@dataclass
class Server:
    """A running artifactd with one edit and one read API token of one account."""

    data_dir: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    account_id: str = ""
    token: str = ""
    read_token: str = ""
    log_path: Path = field(default_factory=lambda: Path(tempfile.mktemp(suffix=".log")))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def account_url(self) -> str:
        return f"{self.url}/client/v4/accounts/{self.account_id}/artifacts"

    def ns_url(self, namespace: str = "default") -> str:
        return f"{self.account_url}/namespaces/{namespace}"

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*artifactd_cmd(), *args, "--data-dir", str(self.data_dir)],
            env=self.env, capture_output=True, text=True, timeout=60,
        )

    def new_api_token(self, permission: str = "edit", account: str | None = None) -> dict[str, Any]:
        args = ["api-token", "create", "--init", "--permission", permission, "--json"]
        if account:
            args += ["--account", account]
        result = self.admin(*args)
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.ns_url(), headers=headers, timeout=60, **kwargs)

    def metric(self, series: str) -> float:
        """The sum of the Prometheus samples of ``series`` (0 if none): a metric name matches
        that name only (not ``<name>_started_total``); a series with labels matches exactly."""
        text = httpx.get(f"{self.url}/metrics").text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(series):
                continue
            rest = line[len(series):]
            if "{" in series or series.endswith(" ") or rest[:1] in (" ", "{"):
                total += float(line.split()[-1])
        return total

    def start(self, *extra: str) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process
        self.process = subprocess.Popen(
            [*artifactd_cmd(), "serve", "--data-dir", str(self.data_dir),
             "--port", str(self.port), *extra],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
            # A test run killed by a timeout must not leave its servers running for hours.
            # Only from the main thread: the signal fires when the starting *thread* ends.
            preexec_fn=die_with_parent if threading.current_thread() is threading.main_thread() else None,
        )
        deadline = time.monotonic() + 120  # a loaded machine starts Python slowly
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                httpx.get(f"{self.url}/client/v4/accounts/x/artifacts/namespaces", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    data_dir: Path, *, database_url: str | None = None, extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")}
    if database_url:
        env["ARTIFACTD_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    server = Server(data_dir=data_dir, port=free_port(), env=env)
    edit = server.new_api_token("edit")
    server.account_id = edit["account_id"]
    server.token = edit["token"]
    server.read_token = server.new_api_token("read")["token"]
    server.start(*args)
    return server


class Postgres:
    """A throwaway PostgreSQL cluster owned by the ``postgres`` OS user (initdb refuses root)."""

    def __init__(self) -> None:
        self.bin = next((p for p in PG_BIN_CANDIDATES if (p / "initdb").exists()), None)
        self.dir = Path(tempfile.mkdtemp(prefix="artifactd-pg-"))
        self.port = free_port()
        self.counter = 0

    @property
    def available(self) -> bool:
        return self.bin is not None

    def _run(self, *argv: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:
            prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        assert self.bin is not None
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "pg.log"), "-w",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            "start",
        )

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        self.counter += 1
        name = f"artifactd_{self.counter}"
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),  # type: ignore[operator]
                  "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.bin is not None and (self.dir / "data").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
