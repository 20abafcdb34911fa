"""The metadata schema, one definition for SQLite and PostgreSQL (SQLAlchemy Core).

Times are integer microseconds since the Unix epoch: exact, sortable, and the same on both
databases. ``repos.last_push_us`` is 0 until the first push so that it can carry a plain
keyset index (NULLs sort differently on the two databases); the API shows 0 as ``null``.
Alembic migrations in ``storage/migrations`` create exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

server_settings = Table(
    "server_settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("created_us", BigInteger, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("permission", String(8), nullable=False),
    Column("name", String(200), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("revoked_us", BigInteger, nullable=True),
)

namespaces = Table(
    "namespaces",
    metadata,
    Column("account_id", String(32), nullable=False, primary_key=True),
    Column("name", String(64), nullable=False, primary_key=True),
    Column("created_us", BigInteger, nullable=False),
    # The base of the namespace's running repo count (storage/metadata.py), never counted;
    # repo inserts and deletes add to ``namespace_repo_counts`` instead.
    Column("repo_count", BigInteger, nullable=False, server_default="0"),
)

# A namespace's running repo count, split into shards: concurrent creates in one namespace
# update different rows instead of all queueing on one row lock that is held through the
# commit's fsync (PostgreSQL serialised every create of a namespace on it). PostgreSQL takes
# a shard no other transaction holds or adds one (storage/pgcreate.py); SQLite's one writer
# picks one of 32 by repo id. The count is ``namespaces.repo_count`` plus the sum of the
# namespace's shards.
namespace_repo_counts = Table(
    "namespace_repo_counts",
    metadata,
    Column("account_id", String(32), nullable=False, primary_key=True),
    Column("namespace", String(64), nullable=False, primary_key=True),
    Column("shard", Integer, nullable=False, primary_key=True),
    Column("delta", BigInteger, nullable=False),
)

repos = Table(
    "repos",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), nullable=False),
    Column("namespace", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("description", Text, nullable=True),
    Column("default_branch", String(255), nullable=False),
    Column("read_only", Boolean, nullable=False, default=False),
    Column("source", Text, nullable=True),
    Column("status", String(16), nullable=False, default="ready"),
    Column("status_reason", Text, nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("last_push_us", BigInteger, nullable=False, default=0),
    Column("size_bytes", BigInteger, nullable=False, default=0),
    Column("maintained_us", BigInteger, nullable=False, default=0),
    Column("pushes_since_maintenance", Integer, nullable=False, default=0),
    Column("import_spec", Text, nullable=True),
    # Bytes admitted for pushes still in flight (see push_intents).
    Column("reserved_bytes", BigInteger, nullable=False, default=0),
    UniqueConstraint("account_id", "namespace", "name", name="uq_repos_name"),
    Index("ix_repos_created", "account_id", "namespace", "created_us", "id"),
    Index("ix_repos_updated", "account_id", "namespace", "updated_us", "id"),
    Index("ix_repos_pushed", "account_id", "namespace", "last_push_us", "id"),
    Index("ix_repos_status", "status"),
    Index("ix_repos_pushes_pending", "pushes_since_maintenance"),
)

# Running storage totals per account, changed in the same transaction as every repo size,
# so that the account limit is one row read and holds for concurrent writers: ``used_bytes``
# is the sum of the account's ``repos.size_bytes``, ``reserved_bytes`` of its repos'
# ``reserved_bytes``.
account_storage = Table(
    "account_storage",
    metadata,
    Column("account_id", String(32), primary_key=True),
    Column("used_bytes", BigInteger, nullable=False, default=0),
    Column("reserved_bytes", BigInteger, nullable=False, default=0),
)

# A push admitted by the pre-receive hook and not yet recorded: its reservation and the ref
# updates it asked for. A row left behind by a crash is reconciled with the disk at start-up.
push_intents = Table(
    "push_intents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("repo_id", String(32), nullable=False),
    Column("account_id", String(32), nullable=False),
    Column("reserved_bytes", BigInteger, nullable=False),
    Column("updates", Text, nullable=False),
    Column("started_us", BigInteger, nullable=False),
    Index("ix_push_intents_repo", "repo_id"),
)

repo_tokens = Table(
    "repo_tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("repo_id", String(32), ForeignKey("repos.id", ondelete="CASCADE"), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("scope", String(8), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Column("revoked_us", BigInteger, nullable=True),
    Index("ix_repo_tokens_repo", "repo_id", "created_us"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(32), nullable=False),
    Column("namespace", String(64), nullable=False),
    Column("repo_name", String(64), nullable=False),
    Column("event_kind", String(8), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("error_message", Text, nullable=True),
    Column("datetime_us", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Index("ix_events_account_time", "account_id", "datetime_us"),
)

# Fixed-window request counters shared by every server node (used with PostgreSQL; a single
# machine on SQLite counts in shared memory instead, see storage/ratecounter.py).
rate_windows = Table(
    "rate_windows",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
)

# -- events (issue 14): the outbox every change writes in its own transaction, the
# subscriptions that read it, and the log of webhook attempts.
event_outbox = Table(
    "event_outbox",
    metadata,
    # SQLite: the rowid (its writer lock orders commits). PostgreSQL: ``xid << 16 | n``, the
    # writing transaction's id (migration 0010; see MetadataStore._write_outbox).
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("account_id", String(32), nullable=False),
    Column("type", String(64), nullable=False),
    Column("namespace", String(64), nullable=False),  # the event's source
    Column("repo_name", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # JSON, the published payload
    Column("created_us", BigInteger, nullable=False),
    Index("ix_event_outbox_account", "account_id", "seq"),
    Index("ix_event_outbox_created", "created_us"),
)

event_subscriptions = Table(
    "event_subscriptions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("source_type", String(16), nullable=False),  # artifacts | artifacts.repo
    Column("namespace", String(64), nullable=True),
    Column("repo_name", String(64), nullable=True),
    Column("event_types", Text, nullable=False),  # JSON list
    Column("destination", String(8), nullable=False),  # webhook | queue
    Column("url", Text, nullable=True),
    Column("secret", Text, nullable=True),
    Column("state", String(8), nullable=False),  # active | paused
    Column("paused_reason", Text, nullable=True),
    # The last outbox seq delivered (webhook) or acknowledged (queue).
    Column("cursor_seq", BigInteger, nullable=False),
    Column("failures", Integer, nullable=False, default=0),
    Column("first_failure_us", BigInteger, nullable=False, default=0),
    Column("next_attempt_us", BigInteger, nullable=False, default=0),
    Column("claimed_by", String(32), nullable=True),
    Column("claimed_until_us", BigInteger, nullable=False, default=0),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Index("ix_event_subscriptions_account", "account_id", "created_us"),
    Index("ix_event_subscriptions_due", "destination", "state", "next_attempt_us"),
)

# One row per webhook attempt; ``outcome`` ``pending`` marks a manual redelivery to make.
event_deliveries = Table(
    "event_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscription_id", String(32), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("outcome", String(10), nullable=False),  # delivered | failed | pending
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("response_snippet", Text, nullable=True),
    Column("attempted_us", BigInteger, nullable=False),
    Index("ix_event_deliveries_subscription", "subscription_id", "id"),
    Index("ix_event_deliveries_pending", "outcome", "subscription_id"),
)

# A dashboard sign-in (docs/dashboard.md): the cookie holds a random id, this row its hash and
# the API token's row (never the token itself), so a copy of the database signs no one in.
dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("token_id", String(16), nullable=False),  # api_tokens.id
    Column("csrf", String(64), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Index("ix_dashboard_sessions_expires", "expires_us"),
)

# The s3 repo store (storage/s3store/): a repo's refs and pack list, and the packs of the
# bucket. ``generation`` grows with every change of a repo's refs or packs, so a node knows
# with one indexed read whether its cache of the repo is current.
s3_repos = Table(
    "s3_repos",
    metadata,
    Column("repo_id", String(32), primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

s3_refs = Table(
    "s3_refs",
    metadata,
    Column("repo_id", String(32), primary_key=True),
    Column("name", String(1024), primary_key=True),
    Column("target", String(64), nullable=False),
)

s3_repo_packs = Table(
    "s3_repo_packs",
    metadata,
    Column("repo_id", String(32), primary_key=True),
    Column("pack", String(64), primary_key=True),
    Index("ix_s3_repo_packs_pack", "pack"),
)

# Every pack uploaded (or about to be): a pack no repo lists and untouched for the grace
# period is removed from the bucket by the sweep.
s3_packs = Table(
    "s3_packs",
    metadata,
    Column("pack", String(64), primary_key=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("touched_us", BigInteger, nullable=False),
    Index("ix_s3_packs_touched", "touched_us"),
)

# One maintenance at a time per repo across nodes: a lease with an expiry.
s3_leases = Table(
    "s3_leases",
    metadata,
    Column("repo_id", String(32), primary_key=True),
    Column("holder", String(32), nullable=False),
    Column("expires_us", BigInteger, nullable=False),
)
