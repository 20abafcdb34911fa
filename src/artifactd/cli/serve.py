"""``artifactd serve``: run the server."""

from __future__ import annotations

import math
import os
import shutil

import click
import uvicorn
from prometheus_client import start_http_server

from artifactd.cli.server_options import resolve_settings, server_options
from artifactd.http.asgi import export_settings
from artifactd.logs import configure_logging
from artifactd.services.backend import Backend


@click.command()
@server_options
@click.option("--host", default=None,
              help="Address to listen on (default 127.0.0.1). [env: ARTIFACTD_HOST]")
@click.option("--port", default=None, type=int, help="Port (default 8787). [env: ARTIFACTD_PORT]")
@click.option("--workers", default=None, type=int,
              help="Server processes (default 1). [env: ARTIFACTD_WORKERS]")
@click.option("--public-url", default=None, help="Base URL clients use. [env: ARTIFACTD_PUBLIC_URL]")
@click.option("--metrics-port", default=None, type=int,
              help="Also serve /metrics on this port. [env: ARTIFACTD_METRICS_PORT]")
@click.option("--log-format", default=None, type=click.Choice(["text", "json"]),
              help="Access log format. [env: ARTIFACTD_LOG_FORMAT]")
def serve(config_file: str | None, **flags: object) -> None:
    """Start the server (REST API and git smart-HTTP on one port).

    \b
    Examples:
      artifactd serve
      artifactd serve --port 9000 --data-dir /var/lib/artifactd
      ARTIFACTD_DATABASE_URL=postgresql://u:p@localhost/artifactd artifactd serve --workers 4
    """
    settings = resolve_settings(config_file, **flags)
    configure_logging(settings)
    backend = Backend.open(settings)  # migrates once, before any worker starts
    try:
        no_tokens = backend.meta.count_api_tokens() == 0
    finally:
        backend.close()
    base = settings.effective_public_url
    click.echo(f"artifactd listening on http://{settings.host}:{settings.port}", err=True)
    click.echo(f"  REST API:  {base}/client/v4/accounts/<ACCOUNT_ID>/artifacts", err=True)
    click.echo(f"  git remote: {settings.remote_url('<ACCOUNT_ID>', '<namespace>', '<repo>')}", err=True)
    click.echo(f"  data dir:  {settings.data_path}", err=True)
    if no_tokens:
        click.echo(
            "No API tokens yet. Create one with:\n"
            f"  artifactd api-token create --data-dir {settings.data_path}",
            err=True,
        )
    if settings.workers > 1:
        # Each worker writes its metric samples here; /metrics merges them.
        multiproc_dir = settings.data_path / "tmp" / "prometheus"
        shutil.rmtree(multiproc_dir, ignore_errors=True)
        multiproc_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    if settings.metrics_port and settings.metrics_enabled:
        from artifactd.http.metrics import registry_for

        metrics_backend = Backend.open(settings, run_migrations=False)
        start_http_server(settings.metrics_port, addr=settings.host,
                          registry=registry_for(metrics_backend))
        click.echo(f"  metrics:   http://{settings.host}:{settings.metrics_port}/metrics", err=True)
    export_settings(settings)
    uvicorn.run(
        "artifactd.http.asgi:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=30,
        # Without a bound a client holding a half-sent body keeps SIGTERM waiting forever.
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_timeout)),  # whole seconds
    )
