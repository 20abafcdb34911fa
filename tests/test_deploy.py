"""The deployment files say what docs/deployment.md says they do.

The Dockerfile itself is performed by deploy/check-dockerfile.sh (a .ci/run step: no Docker
daemon runs here); these tests check the files' settings and let nginx parse its example.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

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


@pytest.mark.skipif(not shutil.which("nginx") or not shutil.which("openssl"), reason="nginx or openssl missing")
def test_nginx_accepts_the_example(tmp_path: Path) -> None:
    """nginx -t on the example, with a throwaway certificate in place of the real one."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=git.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/git.example.com/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/git.example.com/privkey.pem", str(key))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path};\n  include {tmp_path}/site.conf;\n}}\n"
    )
    done = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


def test_check_script_is_run_by_ci() -> None:
    assert "deploy/check-dockerfile.sh" in (ROOT / ".ci" / "run").read_text()
