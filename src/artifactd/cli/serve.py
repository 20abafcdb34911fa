"""``artifactd serve``: run the server."""

from __future__ import annotations

import logging
import os
import shutil

import click
import uvicorn
from prometheus_client import start_http_server

from artifactd.cli import startup
from artifactd.cli.server_options import resolve_settings, server_options
from artifactd.config import Settings, unknown_environment
from artifactd.http.asgi import export_settings
from artifactd.logs import configure_logging, logging_config

log = logging.getLogger("artifactd.serve")


def announce(settings: Settings, text: str) -> None:
    """Start-up lines: plain text for people, log records when every line must be JSON."""
    if settings.log_format == "json":
        for line in text.splitlines():
            log.info(line.strip())
    else:
        click.echo(text, err=True)


def _warn_about_settings(settings: Settings) -> None:
    for warning in unknown_environment(os.environ):
        log.warning(warning)
    # Remotes are built from remote_template; only one that uses {public_url} falls back
    # to the listening address, which names this machine's loopback when host is 0.0.0.0.
    remotes_use_default = not settings.public_url and "{public_url}" in settings.remote_template
    if remotes_use_default and not startup.is_loopback(settings.host):
        log.warning(
            "listening on %s without a public URL: repo remotes will name %s, which other "
            "machines cannot reach; set --public-url (ARTIFACTD_PUBLIC_URL), e.g. "
            "https://git.example.com", settings.host, settings.effective_public_url,
        )


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
              help="Log format: json writes one JSON object per line. [env: ARTIFACTD_LOG_FORMAT]")
@click.option("--tls-cert", default=None, type=click.Path(dir_okay=False),
              help="PEM certificate file: serve HTTPS (with --tls-key). [env: ARTIFACTD_TLS_CERT]")
@click.option("--tls-key", default=None, type=click.Path(dir_okay=False),
              help="PEM private key of --tls-cert. [env: ARTIFACTD_TLS_KEY]")
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
    _warn_about_settings(settings)
    startup.check_tls_files(settings)
    startup.check_port_free(settings.host, settings.port)
    if settings.metrics_port and settings.metrics_enabled:
        startup.check_port_free(settings.host, settings.metrics_port)
    # serve creates a missing data dir (the first run just works); the admin commands do not.
    backend = startup.open_backend(settings)  # migrates once, before any worker starts
    try:
        no_tokens = backend.meta.count_api_tokens() == 0
    finally:
        backend.close()
    base = settings.effective_public_url
    scheme = "https" if settings.tls_enabled else "http"
    announce(settings, f"artifactd listening on {scheme}://{settings.host}:{settings.port}")
    announce(settings, f"  REST API:  {base}/client/v4/accounts/<ACCOUNT_ID>/artifacts")
    announce(settings, f"  git remote: {settings.remote_url('<ACCOUNT_ID>', '<namespace>', '<repo>')}")
    announce(settings, f"  data dir:  {settings.data_path}")
    if no_tokens:
        announce(
            settings,
            "No API tokens yet. Create one with:\n"
            f"  artifactd api-token create --data-dir {settings.data_path}",
        )
    if settings.workers > 1:
        # Each worker writes its metric samples here; /metrics merges them.
        multiproc_dir = settings.data_path / "tmp" / "prometheus"
        shutil.rmtree(multiproc_dir, ignore_errors=True)
        multiproc_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    if settings.metrics_port and settings.metrics_enabled:
        from artifactd.http.metrics import registry_for

        metrics_backend = startup.open_backend(settings, run_migrations=False)
        start_http_server(settings.metrics_port, addr=settings.host,
                          registry=registry_for(metrics_backend))
        announce(settings, f"  metrics:   http://{settings.host}:{settings.metrics_port}/metrics")
    export_settings(settings)
    uvicorn.run(
        "artifactd.http.asgi:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=False,
        log_config=logging_config(settings),  # every worker logs in the one format
        log_level="warning",
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        server_header=False,
        timeout_keep_alive=30,
    )
