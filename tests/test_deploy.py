"""The deployment files say what docs/deployment.md says they do.

The Dockerfile itself is performed by deploy/check-dockerfile.sh (a .ci/run step: no Docker
daemon runs here); these tests check the files' settings and let nginx parse its example.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from artifactd import Artifacts
from tests.harness import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def test_dockerfile_runs_as_a_user_with_git_a_volume_and_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)
    assert re.search(r"apt-get install .*\bgit\b", text)
    assert "\nUSER artifactd\n" in text
    assert 'VOLUME ["/var/lib/artifactd"]' in text and "ENV ARTIFACTD_DATA_DIR=/var/lib/artifactd\n" in text
    assert "ENV ARTIFACTD_HOST=0.0.0.0\n" in text and "ENV ARTIFACTD_PUBLIC_URL=" in text
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, re.M)
    assert 'CMD ["serve"]' in text
    # The check script reads these ENV lines; one setting per line keeps that parse honest.
    assert not re.search(r"^ENV \S+=\S+ \S+=", text, re.M)


def test_compose_runs_postgres_and_a_data_volume() -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert "image: postgres:" in text and "condition: service_healthy" in text
    assert "ARTIFACTD_DATABASE_URL: postgresql://" in text
    assert "artifactd-data:/var/lib/artifactd" in text


def test_systemd_unit_is_hardened() -> None:
    text = (DEPLOY / "artifactd.service").read_text()
    for line in ("User=artifactd", "StateDirectory=artifactd", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "Environment=ARTIFACTD_DATA_DIR=/var/lib/artifactd", "KillMode=control-group"):
        assert f"\n{line}\n" in text, line
    if shutil.which("systemd-analyze"):
        done = subprocess.run(["systemd-analyze", "verify", str(DEPLOY / "artifactd.service")],
                              capture_output=True, text=True)
        assert "Unknown key" not in done.stderr and "Unknown section" not in done.stderr, done.stderr


def test_proxy_examples_stream_git() -> None:
    nginx = (DEPLOY / "nginx.conf").read_text()
    for directive in ("proxy_request_buffering off;", "proxy_buffering off;", "client_max_body_size 0;",
                      "proxy_read_timeout 3600s;", "proxy_send_timeout 3600s;",
                      "proxy_set_header X-Forwarded-For", "proxy_set_header X-Forwarded-Proto"):
        assert directive in nginx, directive
    caddy = (DEPLOY / "Caddyfile").read_text()
    assert "flush_interval -1" in caddy and "read_timeout 3600s" in caddy


def nginx_site(tmp_path: Path, port: int, upstream_port: int) -> Path:
    """The nginx example with a throwaway certificate, on free ports, as a complete config."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=git.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/git.example.com/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/git.example.com/privkey.pem", str(key))
    site = site.replace("server 127.0.0.1:8787;", f"server 127.0.0.1:{upstream_port};")
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;").replace("listen [::]:443 ssl;\n", "")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{free_port()};").replace("listen [::]:80;\n", "")
    (tmp_path / "site.conf").write_text(site)
    temp = tmp_path / "nginx-tmp"
    temp.mkdir()
    os.chmod(temp, 0o777)  # nginx's workers (user nobody) spool there if they ever must
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log warn;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {temp};\n  proxy_temp_path {temp};\n"
        f"  include {tmp_path}/site.conf;\n}}\n"
    )
    return main


needs_nginx = pytest.mark.skipif(not shutil.which("nginx") or not shutil.which("openssl"),
                                 reason="nginx or openssl missing")


@needs_nginx
def test_nginx_accepts_the_example(tmp_path: Path) -> None:
    config = nginx_site(tmp_path, free_port(), 8787)
    done = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(config)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


@needs_nginx
def test_git_push_and_clone_through_the_nginx_example(sqlite_server: Server, tmp_path: Path,
                                                      unique_name: str) -> None:
    """The example's streaming settings carry a push and a clone bigger than nginx's buffers."""
    port = free_port()
    config = nginx_site(tmp_path, port, sqlite_server.port)
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, nginx)
        with Artifacts(sqlite_server.url, sqlite_server.account_id, sqlite_server.token) as client:
            created = client.create(unique_name)
        remote = created.remote.replace(sqlite_server.url, f"https://127.0.0.1:{port}")
        env = {**os.environ, "GIT_SSL_NO_VERIFY": "1", "GIT_TERMINAL_PROMPT": "0",
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
        work = tmp_path / "work"
        work.mkdir()
        # Incompressible content, well past nginx's in-memory body and proxy buffers (8-64 KiB).
        (work / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024))
        auth = ["-c", f"http.extraHeader=Authorization: Bearer {created.token}"]
        ident = ["-c", "user.name=T", "-c", "user.email=t@example.com"]
        for args in (["init", "-q", "-b", "main"], ["add", "."], [*ident, "commit", "-q", "-m", "big"],
                     [*auth, "push", "-q", remote, "main"]):
            subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True, timeout=120)
        subprocess.run(["git", *auth, "clone", "-q", remote, str(tmp_path / "clone")], env=env,
                       check=True, capture_output=True, timeout=120)
        assert (tmp_path / "clone" / "blob.bin").read_bytes() == (work / "blob.bin").read_bytes()
        # Nothing was spooled to disk: no request or response buffering. (With buffering on,
        # nginx spools these bodies to its temp path, and here its workers cannot even reach
        # that: the push fails, so this test fails on an example that buffers.)
        assert "buffered to a temporary file" not in (tmp_path / "error.log").read_text()
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else b""
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nginx did not listen on {port}")


def test_check_script_is_run_by_ci() -> None:
    assert "deploy/check-dockerfile.sh" in (ROOT / ".ci" / "run").read_text()
