"""`artifactd serve` as a user runs it: start-up messages, --workers, config file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.harness import Server, free_port, start_server


def test_first_serve_prints_how_to_create_a_token(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "artifactd", "serve", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("api-token create" in line for line in lines):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
        output = "".join(lines)
        assert f"listening on http://127.0.0.1:{port}" in output
        assert "/git/<ACCOUNT_ID>/<namespace>/<repo>.git" in output
        assert "No API tokens yet" in output and "artifactd api-token create" in output
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_workers_share_one_data_dir(tmp_path: Path) -> None:
    server = start_server(tmp_path / "d", args=("--workers", "2"))
    try:
        def create(i: int) -> int:
            with server.client() as c:
                return c.post("/repos", json={"name": f"w-{i}"}).status_code

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(create, range(200)))
        assert statuses == [200] * 200
        with server.client() as c:
            names: set[str] = set()
            cursor = None
            while True:
                params: dict[str, object] = {"limit": 200}
                if cursor:
                    params["cursor"] = cursor
                page = c.get("/repos", params=params).json()
                names |= {r["name"] for r in page["result"]}
                cursor = page["result_info"]["cursor"]
                if not cursor:
                    break
            assert names == {f"w-{i}" for i in range(200)}
            # A cursor minted by one worker is valid on the other: the key lives in the database.
            assert c.post("/repos", json={"name": "w-0"}).status_code == 409
    finally:
        server.stop()


def test_config_file_and_env(tmp_path: Path) -> None:
    config = tmp_path / "artifactd.toml"
    config.write_text('[artifactd]\npublic_url = "https://git.example.test"\n')
    server = start_server(tmp_path / "d", extra_env={"ARTIFACTD_CONFIG": str(config)})
    try:
        with server.client() as c:
            remote = c.post("/repos", json={"name": "cfg"}).json()["result"]["remote"]
        assert remote == f"https://git.example.test/git/{server.account_id}/default/cfg.git"
    finally:
        server.stop()


def test_host_based_remote_template(tmp_path: Path) -> None:
    template = "https://{account_id}.git.example.com/git/{namespace}/{repo}.git"
    server = start_server(tmp_path / "d", extra_env={"ARTIFACTD_REMOTE_TEMPLATE": template})
    try:
        with server.client() as c:
            remote = c.post("/repos", json={"name": "hosted"}).json()["result"]["remote"]
        assert remote == f"https://{server.account_id}.git.example.com/git/default/hosted.git"
    finally:
        server.stop()


def test_bad_config_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")}
    env["ARTIFACTD_RATE_LIMIT_GIT"] = "lots"
    result = subprocess.run(
        [sys.executable, "-m", "artifactd", "serve", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert result.returncode == 2
    assert "ARTIFACTD_RATE_LIMIT_GIT" in result.stderr and "Traceback" not in result.stderr


def test_access_log_never_contains_tokens(sqlite_server: Server) -> None:
    with sqlite_server.client() as c:
        created = c.post("/repos", json={"name": "log-probe"}).json()["result"]
        c.get("/repos/log-probe")
    # A random secret: other tests on this shared server log 40-hex commit ids in their paths.
    probe = os.urandom(20).hex()
    request_id = f"log-probe-{probe[:8]}"
    httpx.get(sqlite_server.ns_url() + "/repos",
              headers={"Authorization": "Bearer artd_" + probe, "X-Request-Id": request_id})
    # Access lines are written in batches (logs.py): wait for the last request's line, which
    # comes after the others'.
    deadline = time.monotonic() + 10
    while f"rid={request_id}" not in sqlite_server.log_text():
        assert time.monotonic() < deadline, sqlite_server.log_text()[-3000:]
        time.sleep(0.05)
    log = sqlite_server.log_text()
    assert "/repos/log-probe" in log
    secret = created["token"].split("?")[0].removeprefix("art_v1_")
    assert secret not in log
    assert sqlite_server.token.removeprefix("artd_") not in log
    assert probe not in log and "Bearer" not in log
