"""Server settings: command-line flags > ``ARTIFACTD_*`` environment > TOML file > defaults.

Every setting is declared once in ``SETTINGS`` with its environment variable, its TOML key
and a description; ``docs/configuration.md`` is the table of exactly these entries (a test
keeps the two in step).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from artifactd.errors import ConfigError


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


@functools.lru_cache(maxsize=64)  # read on every request (Settings.control_rate)
def parse_rate(raw: str) -> tuple[int, float]:
    """Parse ``2000/10s`` (also ``/1m``, ``/1h``) into (requests, window seconds)."""
    count_text, sep, window_text = raw.strip().partition("/")
    if not sep or not count_text.isdigit() or not window_text:
        raise ValueError(f"rate must look like '2000/10s', got {raw!r}")
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    unit = window_text[-1]
    number = window_text[:-1]
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"rate window must look like '10s', '1m' or '1h', got {window_text!r}")
    count = int(count_text)
    if count <= 0:
        raise ValueError("rate count must be positive")
    return count, int(number) * units[unit]


def _rate_text(raw: str) -> str:
    parse_rate(raw)
    return raw.strip()


def parse_bytes(raw: str) -> int:
    """Parse a byte size: ``1048576``, ``10GB``, ``512MiB``, ``1TB``."""
    text = raw.strip().upper().replace(" ", "")
    factors = {
        "TIB": 1 << 40, "GIB": 1 << 30, "MIB": 1 << 20, "KIB": 1 << 10,
        "TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1,
    }
    number, factor = text, 1
    for suffix, suffix_factor in factors.items():
        if text.endswith(suffix):
            number, factor = text[: -len(suffix)], suffix_factor
            break
    if not number.isdigit():
        raise ValueError(f"not a byte size: {raw!r}")
    return int(number) * factor


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    env: str
    parse: Callable[[str], Any]
    help: str

    @property
    def default(self) -> Any:
        """The default lives once, on the ``Settings`` dataclass below."""
        return getattr(Settings, self.name)


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "ARTIFACTD_HOST", str, "Address to listen on."),
    Setting("port", "ARTIFACTD_PORT", int, "TCP port to listen on."),
    Setting("data_dir", "ARTIFACTD_DATA_DIR", str,
            "Directory holding the SQLite database, the git repositories and the server secret."),
    Setting("database_url", "ARTIFACTD_DATABASE_URL", str,
            "SQLAlchemy URL of the metadata database; empty means SQLite at `<data_dir>/artifactd.db`. "
            "Use `postgresql://user:pass@host/db` for PostgreSQL."),
    Setting("workers", "ARTIFACTD_WORKERS", int, "Number of server processes sharing one data dir."),
    Setting("public_url", "ARTIFACTD_PUBLIC_URL", str,
            "Base URL clients use to reach the server; empty means `http://<host>:<port>`."),
    Setting("remote_template", "ARTIFACTD_REMOTE_TEMPLATE",
            str,
            "Template of each repo's git `remote`. Placeholders: `{public_url}`, `{account_id}`, "
            "`{namespace}`, `{repo}`. A host-based form such as "
            "`https://{account_id}.git.example.com/git/{namespace}/{repo}.git` is served too, "
            "and so is the changelog's `{public_url}/{namespace}/{repo}.git`."),
    Setting("default_account", "ARTIFACTD_DEFAULT_ACCOUNT", str,
            "Account id used by `api-token create` when `--account` is not given; empty means "
            "the data dir's own default account (a random 32-hex id made on first use)."),
    Setting("log_level", "ARTIFACTD_LOG_LEVEL", str, "Log level: debug, info, warning, error."),
    Setting("log_format", "ARTIFACTD_LOG_FORMAT", str,
            "Format of every log line: `text` or `json` (one JSON object per line)."),
    Setting("max_body_bytes", "ARTIFACTD_MAX_BODY_BYTES", parse_bytes,
            "Largest JSON request body the control plane accepts."),
    Setting("rate_limit_control", "ARTIFACTD_RATE_LIMIT_CONTROL", _rate_text,
            "Control-plane requests allowed per namespace per window."),
    Setting("rate_limit_git", "ARTIFACTD_RATE_LIMIT_GIT", _rate_text,
            "Git requests allowed per repo per window."),
    Setting("max_repo_bytes", "ARTIFACTD_MAX_REPO_BYTES", parse_bytes,
            "Storage limit of one repo."),
    Setting("max_account_bytes", "ARTIFACTD_MAX_ACCOUNT_BYTES", parse_bytes,
            "Storage limit of one account."),
    Setting("import_allow_hosts", "ARTIFACTD_IMPORT_ALLOW_HOSTS", str,
            "Comma-separated hosts and CIDRs that imports may reach even though they are "
            "loopback or private, and that may use plain `http`."),
    Setting("webhook_allow_hosts", "ARTIFACTD_WEBHOOK_ALLOW_HOSTS", str,
            "Comma-separated hosts and CIDRs that webhooks may reach even though they are "
            "loopback or private, and that may use plain `http`."),
    Setting("webhook_timeout", "ARTIFACTD_WEBHOOK_TIMEOUT", float,
            "Seconds a webhook receiver has to answer one delivery."),
    Setting("webhook_retry_base", "ARTIFACTD_WEBHOOK_RETRY_BASE", float,
            "Seconds before the first retry of a failed delivery; each retry waits twice as "
            "long, at most 6 hours."),
    Setting("webhook_give_up_after", "ARTIFACTD_WEBHOOK_GIVE_UP_AFTER", float,
            "Seconds of failing deliveries after which a webhook subscription is paused."),
    Setting("event_retention", "ARTIFACTD_EVENT_RETENTION", float,
            "Seconds events stay in the outbox (what a queue consumer can still read)."),
    Setting("import_timeout", "ARTIFACTD_IMPORT_TIMEOUT", float,
            "Seconds an import may run before it is stopped and marked failed."),
    Setting("import_concurrency", "ARTIFACTD_IMPORT_CONCURRENCY", int,
            "Imports one server process runs at once; further imports wait their turn."),
    Setting("git_max_processes", "ARTIFACTD_GIT_MAX_PROCESSES", int,
            "Most git processes serving clients at once; further requests wait in a queue."),
    Setting("git_queue_timeout", "ARTIFACTD_GIT_QUEUE_TIMEOUT", float,
            "Seconds a git request may wait for a free slot before it gets 503 with Retry-After."),
    Setting("trash_grace_seconds", "ARTIFACTD_TRASH_GRACE_SECONDS", float,
            "Seconds a deleted repo's directory stays in the trash before it is removed."),
    Setting("maintenance_after_pushes", "ARTIFACTD_MAINTENANCE_AFTER_PUSHES", int,
            "Maintain a repo (repack, bitmaps, commit-graph, prune) after this many pushes "
            "(a small repo is also compacted after its first push)."),
    Setting("maintenance_interval", "ARTIFACTD_MAINTENANCE_INTERVAL", float,
            "Seconds between looks for repos due for maintenance (0 turns maintenance off)."),
    Setting("gc_grace_seconds", "ARTIFACTD_GC_GRACE_SECONDS", float,
            "Unreachable objects younger than this are never pruned (protects pushes in flight)."),
    Setting("shutdown_timeout", "ARTIFACTD_SHUTDOWN_TIMEOUT", float,
            "Seconds a graceful shutdown (SIGTERM) waits for open requests to finish before "
            "it closes them and exits."),
    Setting("analytics_enabled", "ARTIFACTD_ANALYTICS_ENABLED", _parse_bool,
            "Record analytics events (the GraphQL dataset)."),
    Setting("metrics_port", "ARTIFACTD_METRICS_PORT", int,
            "Serve `/metrics` on this separate port as well (0: only on the main port)."),
    Setting("metrics_enabled", "ARTIFACTD_METRICS_ENABLED", _parse_bool,
            "Serve Prometheus metrics at `/metrics`."),
    Setting("tls_cert", "ARTIFACTD_TLS_CERT", str,
            "PEM certificate file (the chain, leaf first); with `tls_key` the server speaks HTTPS "
            "and the default public URL starts with `https://`."),
    Setting("tls_key", "ARTIFACTD_TLS_KEY", str, "PEM private key file of `tls_cert`."),
    Setting("content_reader_max_repos", "ARTIFACTD_CONTENT_READER_MAX_REPOS", int,
            "Most repositories each worker keeps open for content reads (about 30 KiB and up to "
            "2 descriptors each, only while read within the last minute); fitted to the "
            "open-file limit at start-up."),
    Setting("git_max_processes_per_repo", "ARTIFACTD_GIT_MAX_PROCESSES_PER_REPO", int,
            "Most of the `git_max_processes` slots one repo may hold at once, so that one "
            "client cannot starve the others."),
    Setting("git_nice", "ARTIFACTD_GIT_NICE", int,
            "How much nicer (0-19) than the server every git process it starts runs, so that "
            "the server's own request handling gets the CPU first when pushes and clones keep "
            "it busy (0: the server's own; maintenance always runs at 19)."),
    Setting("loop_slice_us", "ARTIFACTD_LOOP_SLICE_US", int,
            "CPU slice (microseconds, 100-100000) the Linux scheduler gives each worker's event "
            "loop thread, so that a small request preempts git and other bulk work sooner (0: "
            "the kernel's default; needs Linux 6.12, docs/operations.md)."),
    Setting("git_in_process_clone", "ARTIFACTD_GIT_IN_PROCESS_CLONE", _parse_bool,
            "Answer a protocol-v2 clone's `ls-refs` and `fetch` of a small repo in process "
            "(libgit2) instead of starting `git upload-pack` (docs/git.md)."),
    Setting("git_in_process_push", "ARTIFACTD_GIT_IN_PROCESS_PUSH", _parse_bool,
            "Receive a small push (a request under 1 MiB, a pack of at most 4,000 objects) in "
            "process on the `local` repo store instead of starting `git receive-pack` "
            "(docs/git.md)."),
    Setting("http_max_request_line", "ARTIFACTD_HTTP_MAX_REQUEST_LINE", parse_bytes,
            "Longest request target (path and query) accepted; longer gets 414."),
    Setting("http_max_header_bytes", "ARTIFACTD_HTTP_MAX_HEADER_BYTES", parse_bytes,
            "Largest request head (request line and all headers) accepted; larger gets 431."),
    Setting("http_max_headers", "ARTIFACTD_HTTP_MAX_HEADERS", int,
            "Most header fields in one request; more gets 431."),
    Setting("http_header_timeout", "ARTIFACTD_HTTP_HEADER_TIMEOUT", float,
            "Seconds a connection may take to send a complete request head (from connecting, "
            "or from the first byte of a later request); then 408 and the connection is closed."),
    Setting("http_body_timeout", "ARTIFACTD_HTTP_BODY_TIMEOUT", float,
            "Seconds a request body may go without a byte arriving; then 408 (or, once the "
            "answer has started, the connection is closed)."),
    Setting("http_keep_alive_timeout", "ARTIFACTD_HTTP_KEEP_ALIVE_TIMEOUT", float,
            "Seconds an idle keep-alive connection stays open between requests."),
    Setting("http_max_connections", "ARTIFACTD_HTTP_MAX_CONNECTIONS", int,
            "Open connections one worker serves; keep it well under `ulimit -n`. At the cap a "
            "new connection displaces the oldest one that has no request in progress."),
    Setting("http_connection_reserve", "ARTIFACTD_HTTP_CONNECTION_RESERVE", int,
            "Connections beyond `http_max_connections`, when every connection has a request in "
            "progress, that may still reach `/metrics`, `/healthz` and `/readyz` (others get "
            "503); beyond both, a connection is answered 503 and closed."),
    Setting("storage_backend", "ARTIFACTD_STORAGE_BACKEND", str,
            "Where repo data lives: `local` (bare repos in the data dir) or `s3` (packs in an "
            "S3-compatible bucket, refs and pack lists in the database, the data dir a cache; "
            "more than one node needs PostgreSQL)."),
    Setting("s3_endpoint_url", "ARTIFACTD_S3_ENDPOINT_URL", str,
            "URL of the S3-compatible object store (empty: AWS S3 of `s3_region`)."),
    Setting("s3_bucket", "ARTIFACTD_S3_BUCKET", str,
            "Bucket of the `s3` backend (must exist; checked at start-up)."),
    Setting("s3_region", "ARTIFACTD_S3_REGION", str, "Region of the bucket."),
    Setting("s3_prefix", "ARTIFACTD_S3_PREFIX", str,
            "Key prefix of every object artifactd writes in the bucket (several deployments "
            "can share one bucket)."),
    Setting("s3_access_key_id", "ARTIFACTD_S3_ACCESS_KEY_ID", str,
            "Access key of the bucket (empty: the standard `AWS_ACCESS_KEY_ID`, shared files)."),
    Setting("s3_secret_access_key", "ARTIFACTD_S3_SECRET_ACCESS_KEY", str,
            "Secret of `s3_access_key_id` (empty: the standard `AWS_SECRET_ACCESS_KEY`)."),
    Setting("cache_max_bytes", "ARTIFACTD_CACHE_MAX_BYTES", parse_bytes,
            "With `s3`: most bytes of repo caches kept on this node's disk; beyond it whole "
            "repos not in use are evicted, least recently used first."),
    Setting("s3_upload_part_bytes", "ARTIFACTD_S3_UPLOAD_PART_BYTES", parse_bytes,
            "With `s3`: part size of a pushed pack's multipart upload, which runs while the "
            "pack arrives (a smaller pack is uploaded whole after it)."),
)

# ARTIFACTD_* variables that are not server settings: read by the client commands, the
# credential helper, or handed by `serve` to its worker processes.
OTHER_ENV = frozenset({
    "ARTIFACTD_CONFIG", "ARTIFACTD_SERVE_SETTINGS", "ARTIFACTD_URL", "ARTIFACTD_ACCOUNT_ID",
    "ARTIFACTD_API_TOKEN", "ARTIFACTD_NAMESPACE", "ARTIFACTD_CLIENT_CONFIG", "ARTIFACTD_TIMEOUT",
})


def unknown_environment(env: Mapping[str, str]) -> list[str]:
    """One warning per ``ARTIFACTD_*`` variable nothing reads (a typo is otherwise silent)."""
    known = {s.env for s in SETTINGS} | OTHER_ENV
    warnings = []
    for name in sorted(env):
        if not name.startswith("ARTIFACTD_") or name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"unknown environment variable {name} is ignored{hint}")
    return warnings

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8787
    data_dir: str = "./artifactd-data"
    database_url: str = ""
    workers: int = 1
    public_url: str = ""
    remote_template: str = "{public_url}/git/{account_id}/{namespace}/{repo}.git"
    default_account: str = ""
    log_level: str = "info"
    log_format: str = "text"
    max_body_bytes: int = 1 << 20
    rate_limit_control: str = "2000/10s"
    rate_limit_git: str = "2000/10s"
    max_repo_bytes: int = 10 * 10**9
    max_account_bytes: int = 10**12
    import_allow_hosts: str = ""
    webhook_allow_hosts: str = ""
    webhook_timeout: float = 10.0
    webhook_retry_base: float = 5.0
    webhook_give_up_after: float = 86400.0
    event_retention: float = 7 * 86400.0
    import_timeout: float = 3600.0
    import_concurrency: int = 4
    git_max_processes: int = 32
    git_queue_timeout: float = 30.0
    trash_grace_seconds: float = 0.0
    maintenance_after_pushes: int = 20
    maintenance_interval: float = 10.0
    gc_grace_seconds: float = 3600.0
    shutdown_timeout: float = 30.0
    analytics_enabled: bool = True
    metrics_port: int = 0
    metrics_enabled: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    git_max_processes_per_repo: int = 8
    # A read fan-out over 10,000 repos (one per agent) stays open: a read of a repo not open
    # costs libgit2's open and pack load, about 7x a read of an open one (bench.dense).
    content_reader_max_repos: int = 16384
    git_nice: int = 5
    loop_slice_us: int = 100
    git_in_process_clone: bool = True
    git_in_process_push: bool = True
    http_max_request_line: int = 8 << 10
    http_max_header_bytes: int = 64 << 10
    http_max_headers: int = 100
    http_header_timeout: float = 10.0
    http_body_timeout: float = 60.0
    http_keep_alive_timeout: float = 30.0
    http_max_connections: int = 512
    http_connection_reserve: int = 32
    storage_backend: str = "local"
    s3_endpoint_url: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_prefix: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    cache_max_bytes: int = 10 * 10**9
    s3_upload_part_bytes: int = 8 << 20

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'artifactd.db'}"

    @property
    def effective_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls_enabled else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert)

    @property
    def control_rate(self) -> tuple[int, float]:
        return parse_rate(self.rate_limit_control)

    @property
    def git_rate(self) -> tuple[int, float]:
        return parse_rate(self.rate_limit_git)

    def remote_url(self, account_id: str, namespace: str, repo: str) -> str:
        return self.remote_template.format(
            public_url=self.effective_public_url, account_id=account_id,
            namespace=namespace, repo=repo,
        )


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    try:
        if isinstance(value, str):
            return setting.parse(value)
        if setting.parse is _rate_text:
            raise ValueError("rate must be a string such as '2000/10s'")
        if setting.parse is parse_bytes and isinstance(value, int):
            return value
        if isinstance(value, bool) and setting.parse is _parse_bool:
            return value
        if isinstance(value, int | float) and setting.parse in (int, float):
            return setting.parse(value)
        raise ValueError(f"unexpected type {type(value).__name__}")
    except ValueError as exc:
        raise ConfigError(f"{origin}: invalid value for {setting.name}: {exc}") from exc


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Merge the sources in precedence order: flags, then environment, then file."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get("ARTIFACTD_CONFIG")
    if path:
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        table = document.get("artifactd", document)
        for key, raw in table.items():
            setting = _BY_NAME.get(key)
            if setting is None:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(setting, raw, f"config file {path}")
    for setting in SETTINGS:
        if setting.env in env and env[setting.env] != "":
            values[setting.name] = _coerce(setting, env[setting.env], setting.env)
    for key, raw in (flags or {}).items():
        if raw is not None:
            values[key] = _coerce(_BY_NAME[key], raw, f"--{key.replace('_', '-')}")
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    try:
        settings.control_rate  # noqa: B018 - parse for validation
        settings.git_rate  # noqa: B018
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if settings.log_format not in {"text", "json"}:
        raise ConfigError("log_format must be 'text' or 'json'")
    if settings.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError("log_level must be one of debug, info, warning, error")
    if settings.workers < 1:
        raise ConfigError("workers must be at least 1")
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("tls_cert and tls_key go together: give both, or neither")
    if not settings.shutdown_timeout >= 0:  # also refuses nan
        raise ConfigError("shutdown_timeout must be a number of seconds, 0 or more")
    try:
        settings.remote_url("a", "b", "c")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"remote_template has an unknown placeholder: {exc}") from exc
    for name in ("git_max_processes_per_repo", "content_reader_max_repos",
                 "http_max_request_line", "http_max_header_bytes",
                 "http_max_headers", "http_max_connections"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    for name in ("http_header_timeout", "http_body_timeout", "http_keep_alive_timeout"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be a positive number of seconds")
    if not 0 <= settings.git_nice <= 19:
        raise ConfigError("git_nice must be between 0 and 19")
    if settings.loop_slice_us and not 100 <= settings.loop_slice_us <= 100_000:
        raise ConfigError("loop_slice_us must be 0 or between 100 and 100000")
    if settings.http_connection_reserve < 0:
        raise ConfigError("http_connection_reserve must not be negative")
    if settings.storage_backend not in {"local", "s3"}:
        raise ConfigError("storage_backend must be 'local' or 's3'")
    if settings.storage_backend == "s3" and not settings.s3_bucket:
        raise ConfigError("storage_backend 's3' needs s3_bucket")
    if settings.cache_max_bytes < 1:
        raise ConfigError("cache_max_bytes must be at least 1")
    if not 5 << 20 <= settings.s3_upload_part_bytes <= 5 << 30:
        raise ConfigError("s3_upload_part_bytes must be between 5 MiB and 5 GiB (S3's smallest "
                          "and largest part)")
