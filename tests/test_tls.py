"""``serve --tls-cert/--tls-key``: HTTPS for the REST API and a real git clone and push over it.

The certificate is made here, self-signed for 127.0.0.1, and trusted by the clients through
``verify=`` (httpx) and ``GIT_SSL_CAINFO`` (git): nothing is turned off.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.gitutil import Git, basic_remote
from tests.harness import Server, artifactd_cmd, free_port


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "artifactd test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ))
    return cert_path, key_path


class TLSServer(Server):
    """A ``Server`` reached over HTTPS, trusting the test's own certificate."""

    ca: Path = Path()

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        return super().client(token, verify=self.trust(), **kwargs)

    def start(self, *extra: str) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process
        self.process = subprocess.Popen(
            [*artifactd_cmd(), "serve", "--data-dir", str(self.data_dir), "--port", str(self.port), *extra],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.log_text()
            try:
                httpx.get(self.url + "/", verify=self.trust(), timeout=1)
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, self.log_text()
                time.sleep(0.05)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    cert, key = self_signed(tmp_path_factory.mktemp("certs"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")}
    server = TLSServer(data_dir=tmp_path_factory.mktemp("data-tls"), port=free_port(), env=env)
    server.ca = cert
    edit = server.new_api_token("edit")
    server.account_id, server.token = edit["account_id"], edit["token"]
    server.start("--tls-cert", str(cert), "--tls-key", str(key))
    yield server
    server.stop()


def test_rest_over_https_and_remotes_say_https(tls_server: TLSServer) -> None:
    with tls_server.client() as c:
        created = c.post("/repos", json={"name": "over-tls"})
    assert created.status_code == 200, created.text
    remote = created.json()["result"]["remote"]
    assert remote.startswith(f"https://127.0.0.1:{tls_server.port}/git/")
    assert "listening on https://" in tls_server.log_text()
    with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused, as it must be
        httpx.get(tls_server.url + "/")


def test_git_clone_and_push_over_https(tls_server: TLSServer, tmp_path: Path) -> None:
    with tls_server.client() as c:
        result = c.post("/repos", json={"name": "git-over-tls"}).json()["result"]
    git = Git(tmp_path / "home")
    git.env["GIT_SSL_CAINFO"] = str(tls_server.ca)
    remote = basic_remote(result["remote"], result["token"])
    work = tmp_path / "work"
    head = git.new_work(work, {"README.md": "over https\n"})
    git.run("push", "-q", remote, "main", cwd=work)
    git.run("clone", "-q", remote, str(tmp_path / "clone"))
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "clone") == head
    assert (tmp_path / "clone" / "README.md").read_text() == "over https\n"
