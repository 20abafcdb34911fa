"""The metadata store: every SQL statement of artifactd lives here.

Rows come back as frozen dataclasses. Database-specific failures are normalised here, once:
a duplicate repo name becomes ``Conflict(REPO_EXISTS)`` whatever the driver said.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError

from artifactd.errors import Code, Conflict
from artifactd.storage import outboxseq, pgcreate
from artifactd.storage.db import sqlite_path
from artifactd.storage.pglookups import PgLookups
from artifactd.storage.schema import (
    account_storage,
    accounts,
    api_tokens,
    event_outbox,
    namespace_repo_counts,
    namespaces,
    push_intents,
    repo_tokens,
    repos,
    server_settings,
)
from artifactd.storage.sqliteexec import SqliteStatements
from artifactd.storage.sqlitelookups import SqliteLookups
from artifactd.storage.writerlock import WriterLock

# Rows a namespace's running repo count is split into (``namespace_repo_counts``): more
# than the concurrent writers of one namespace a node usually has, few enough to sum.
REPO_COUNT_SHARDS = 32

SortField = Literal["created_at", "updated_at", "last_push_at", "name"]
SORT_COLUMNS = {
    "created_at": repos.c.created_us,
    "updated_at": repos.c.updated_us,
    "last_push_at": repos.c.last_push_us,
    "name": repos.c.name,
}


@dataclasses.dataclass(frozen=True)
class RepoRow:
    id: str
    account_id: str
    namespace: str
    name: str
    description: str | None
    default_branch: str
    read_only: bool
    source: str | None
    status: str
    status_reason: str | None
    created_us: int
    updated_us: int
    last_push_us: int
    size_bytes: int
    maintained_us: int
    pushes_since_maintenance: int
    import_spec: str | None
    reserved_bytes: int = 0  # admitted for pushes in flight


@dataclasses.dataclass(frozen=True)
class OutboxRow:
    """One event for the outbox, written in the transaction of the change it reports."""

    id: str
    account_id: str
    type: str
    namespace: str
    repo_name: str
    payload: str  # JSON
    created_us: int


Outbox = Sequence[OutboxRow]


@dataclasses.dataclass(frozen=True)
class RepoTokenRow:
    id: str
    repo_id: str
    scope: str
    created_us: int
    expires_us: int
    revoked_us: int | None


@dataclasses.dataclass(frozen=True)
class ApiTokenRow:
    id: str
    account_id: str
    permission: str
    name: str | None
    created_us: int
    revoked_us: int | None


@dataclasses.dataclass(frozen=True)
class PushIntentRow:
    id: str
    repo_id: str
    account_id: str
    reserved_bytes: int
    updates: str
    started_us: int


class _Refused(Exception):
    """Rolls a storage transaction back; ``reason`` names the limit that refused it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class NamespaceRow:
    account_id: str
    name: str
    created_us: int


def _row_dict(row: Any) -> dict[str, Any]:
    """A row dataclass as a flat dict (``dataclasses.asdict`` deep-copies every value)."""
    return dict(vars(row))


def _repo(row: Any) -> RepoRow:
    return RepoRow(**{f.name: getattr(row, f.name) for f in dataclasses.fields(RepoRow)})


_Row = TypeVar("_Row")


def _from_mapping(cls: type[_Row], found: Mapping[str, Any], prefix: str = "") -> _Row:
    """A row dataclass from a lookup's columns (``prefix``: a joined table's labels)."""
    return cls(**{f.name: found[prefix + f.name] for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def _token(row: Any) -> RepoTokenRow:
    return RepoTokenRow(**{f.name: getattr(row, f.name) for f in dataclasses.fields(RepoTokenRow)})


def _api_token(row: Any) -> ApiTokenRow:
    return ApiTokenRow(**{f.name: getattr(row, f.name) for f in dataclasses.fields(ApiTokenRow)})


_REPO_COLUMNS = [repos.c[f.name] for f in dataclasses.fields(RepoRow)]
# Statements built once and executed with parameter dicts: ``insert(t).values(**row)`` would
# embed every value in the statement and pay SQLAlchemy's cache-key cost on each call.
_INSERT_REPO = insert(repos)
_INSERT_TOKEN = insert(repo_tokens)
_INSERT_OUTBOX = insert(event_outbox)
# PostgreSQL: seqs from the writing transaction's id (storage/outboxseq.py).
_INSERT_OUTBOX_POSTGRES = insert(event_outbox).values(seq=outboxseq.WRITTEN_SEQ)
_INSERT_NAMESPACE = insert(namespaces)
# Two first creates in a new namespace can race; the loser's namespace insert must not
# fail its whole create. Both databases speak ON CONFLICT DO NOTHING.
_INSERT_NAMESPACE_IF_NEW = {
    "sqlite": sqlite_insert(namespaces).on_conflict_do_nothing(),
    "postgresql": postgresql_insert(namespaces).on_conflict_do_nothing(),
}
_TOKEN_COLUMNS = [repo_tokens.c[f.name] for f in dataclasses.fields(RepoTokenRow)]

# The hot-path reads, built once with bind parameters: building the expression per call
# (and SQLAlchemy computing its cache key) costs more than SQLite takes to answer.
_SELECT_API_TOKEN = select(api_tokens).where(api_tokens.c.secret_hash == bindparam("h"))
_SELECT_NAMESPACE_EXISTS = select(namespaces.c.name).where(
    namespaces.c.account_id == bindparam("a"), namespaces.c.name == bindparam("n"))
_SELECT_REPO_BY_NAME = select(*_REPO_COLUMNS).where(
    repos.c.account_id == bindparam("a"), repos.c.namespace == bindparam("ns"),
    repos.c.name == bindparam("n"))
_SELECT_REPO_BY_ID = select(*_REPO_COLUMNS).where(repos.c.id == bindparam("i"))
_SELECT_TOKEN_WITH_REPO = (
    select(*_TOKEN_COLUMNS, *[c.label(f"r_{c.name}") for c in _REPO_COLUMNS])
    .select_from(repo_tokens.join(repos, repo_tokens.c.repo_id == repos.c.id))
    .where(repo_tokens.c.secret_hash == bindparam("h"))
)
_SELECT_TOKEN_BY_ID = select(*_TOKEN_COLUMNS).where(repo_tokens.c.id == bindparam("i"))



def _add_to_account_statement(make: Any) -> Any:
    statement = make(account_storage).values(
        account_id=bindparam("p_account_id"), used_bytes=bindparam("p_used"),
        reserved_bytes=bindparam("p_reserved"))
    return statement.on_conflict_do_update(
        index_elements=[account_storage.c.account_id],
        set_={"used_bytes": account_storage.c.used_bytes + statement.excluded.used_bytes,
              "reserved_bytes": account_storage.c.reserved_bytes
              + statement.excluded.reserved_bytes},
    )


def _add_to_namespace_statement() -> Any:
    statement = sqlite_insert(namespace_repo_counts).values(
        account_id=bindparam("p_account_id"), namespace=bindparam("p_namespace"),
        shard=bindparam("p_shard"), delta=bindparam("p_delta"))
    return statement.on_conflict_do_update(
        index_elements=[namespace_repo_counts.c.account_id, namespace_repo_counts.c.namespace,
                        namespace_repo_counts.c.shard],
        set_={"delta": namespace_repo_counts.c.delta + statement.excluded.delta},
    )


# The running totals' upserts run several times per create, push and delete: built once
# with bound parameters, SQLAlchemy neither rebuilds them (``excluded`` makes an alias each
# time) nor recomputes their cache key on every call.
_ADD_TO_ACCOUNT_SQLITE = _add_to_account_statement(sqlite_insert)
_ADD_TO_ACCOUNT_PG = _add_to_account_statement(postgresql_insert)
_ADD_TO_NAMESPACE_SQLITE = _add_to_namespace_statement()
# The push path's statements (admission, the repo row lock, the intent), built once too.
# A no-op write takes SQLite's write lock and PostgreSQL's row lock (see ``_lock_repo``).
_LOCK_REPO = (update(repos).where(repos.c.id == bindparam("p_repo"))
              .values(reserved_bytes=repos.c.reserved_bytes))
_LOCKED_REPO = (select(repos.c.size_bytes, repos.c.reserved_bytes, repos.c.account_id)
                .where(repos.c.id == bindparam("p_repo")))
_RESERVE_IN_REPO = (
    update(repos)
    .where(repos.c.id == bindparam("p_repo"),
           repos.c.size_bytes + repos.c.reserved_bytes + bindparam("p_amount", type_=BigInteger)
           <= bindparam("p_limit", type_=BigInteger))
    .values(reserved_bytes=repos.c.reserved_bytes + bindparam("p_amount", type_=BigInteger)))


def _add_within_account_limit(column: str) -> Any:
    """``column`` of the account's totals raised by ``p_amount`` only while used plus
    reserved stays within ``p_limit``: one conditional update, so concurrent writers of one
    account are admitted one after another against totals that include each other."""
    amount = bindparam("p_amount", type_=BigInteger)
    return (update(account_storage)
            .where(account_storage.c.account_id == bindparam("p_account_id"),
                   account_storage.c.used_bytes + account_storage.c.reserved_bytes + amount
                   <= bindparam("p_limit", type_=BigInteger))
            .values({column: account_storage.c[column] + amount}))


_RESERVE_IN_ACCOUNT = _add_within_account_limit("reserved_bytes")
_LOCKED_REPO_PLACE = (select(repos.c.size_bytes, repos.c.reserved_bytes, repos.c.account_id,
                             repos.c.namespace).where(repos.c.id == bindparam("p_repo")))
_DELETE_REPO_TOKENS = delete(repo_tokens).where(repo_tokens.c.repo_id == bindparam("p_repo"))
_DELETE_REPO_INTENTS = delete(push_intents).where(push_intents.c.repo_id == bindparam("p_repo"))
_DELETE_REPO = delete(repos).where(repos.c.id == bindparam("p_repo"))
# Asked after every push (is an earlier process's intent left to settle?).
_REPO_INTENTS = select(push_intents).where(push_intents.c.repo_id == bindparam("p_repo"))
# A push's end: its reservation released, the measured size recorded and, when refs moved,
# the push counted (``finish_push``).
_RELEASE_PUSH = (
    update(repos).where(repos.c.id == bindparam("p_repo"))
    .values(size_bytes=bindparam("p_size", type_=BigInteger),
            reserved_bytes=repos.c.reserved_bytes - bindparam("p_amount", type_=BigInteger)))
_RECORD_PUSH = _RELEASE_PUSH.values(
    last_push_us=bindparam("p_pushed", type_=BigInteger),
    updated_us=bindparam("p_pushed", type_=BigInteger),
    pushes_since_maintenance=repos.c.pushes_since_maintenance + 1)
# ``set_repo_size`` without other values (a fork's, an import's size): the account's total
# moved by the delta, under the account limit for a growth or not, and the repo's size.
_GROW_ACCOUNT = (
    update(account_storage)
    .where(account_storage.c.account_id == bindparam("p_account_id"))
    .values(used_bytes=account_storage.c.used_bytes + bindparam("p_amount", type_=BigInteger)))
_GROW_ACCOUNT_WITHIN = _add_within_account_limit("used_bytes")
_SET_REPO_SIZE = (update(repos).where(repos.c.id == bindparam("p_repo"))
                  .values(size_bytes=bindparam("p_size", type_=BigInteger)))
_ACCOUNT_SIZE = (select((account_storage.c.used_bytes + account_storage.c.reserved_bytes)
                        .label("size"))
                 .where(account_storage.c.account_id == bindparam("p_account_id")))
_INSERT_INTENT = insert(push_intents)
_INTENT_RESERVED = select(push_intents.c.reserved_bytes).where(
    push_intents.c.id == bindparam("p_intent"))
_DELETE_INTENT = delete(push_intents).where(push_intents.c.id == bindparam("p_intent"))


class _Lookups(Protocol):
    """The hot lookups' path past SQLAlchemy (storage/pglookups.py, storage/sqlitelookups.py)."""

    def lookup(self, statement: Any) -> Any: ...

    def first(self, lookup: Any, params: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def rows(self, lookup: Any, params: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def _fast_lookups(engine: Engine) -> _Lookups | None:
    if engine.dialect.name == "postgresql":
        return PgLookups(engine)
    path = sqlite_path(engine.url)
    # An in-memory database exists only on the engine's own connections.
    return SqliteLookups(path) if path is not None else None


class MetadataStore:
    def __init__(self, engine: Engine, *, fast_lookups: bool = True):
        """``fast_lookups=False``: every lookup through SQLAlchemy (the tests compare)."""
        self.engine = engine
        # SQLite answers in tens of microseconds from local disk: calling it straight from the
        # event loop beats a thread hop, and avoids the GIL convoy of many threads that each
        # release and re-acquire the GIL around every sqlite3_step. PostgreSQL is a network
        # round trip and goes through the thread pool.
        self.inline_ok = engine.dialect.name == "sqlite"
        self.postgres = engine.dialect.name == "postgresql"
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # The hot lookups skip SQLAlchemy (storage/pglookups.py, storage/sqlitelookups.py).
        self._fast = _fast_lookups(engine) if fast_lookups else None
        if self._fast is not None:
            self._fast_api_token = self._fast.lookup(_SELECT_API_TOKEN)
            self._fast_repo_by_name = self._fast.lookup(_SELECT_REPO_BY_NAME)
            self._fast_repo_by_id = self._fast.lookup(_SELECT_REPO_BY_ID)
            self._fast_token_with_repo = self._fast.lookup(_SELECT_TOKEN_WITH_REPO)
            self._fast_token_by_id = self._fast.lookup(_SELECT_TOKEN_BY_ID)
            # Asked around every push: the limits' account total, the after-push intent check.
            self._fast_account_size = self._fast.lookup(_ACCOUNT_SIZE)
            self._fast_repo_intents = self._fast.lookup(_REPO_INTENTS)
        # SQLite: the hot write paths' statements past SQLAlchemy (storage/sqliteexec.py;
        # tests/test_statement_reuse.py looks at what it compiled).
        self.sqlite_statements = (SqliteStatements() if engine.dialect.name == "sqlite"
                                   and fast_lookups else None)
        self._writer_lock = WriterLock(engine)
        # Called (from the writing thread, inside its transaction) when events are written:
        # the webhook thread waits on one instead of polling.
        self.outbox_listeners: list[Callable[[], None]] = []

    def _exec(self, conn: Connection, statement: Any, params: Any) -> Any:
        """A hot write path's statement (built once, module level) in ``conn``'s transaction."""
        if self.sqlite_statements is not None:
            return self.sqlite_statements.execute(conn, statement, params)
        return conn.execute(statement, params)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def write_inline_ok(self) -> bool:
        """Whether a write may run on the caller's thread, the event loop included: SQLite
        (a local transaction, cheaper than a thread hop) with no other writer in the way
        (one would keep the loop waiting in SQLite's busy handler)."""
        return self.inline_ok and not self._writer_lock.busy()

    @contextmanager
    def _write_tx(self) -> Iterator[Connection]:
        """A write transaction of the hot paths (create, delete): queued on the
        ``WriterLock`` first (SQLite; see storage/writerlock.py)."""
        with self._writer_lock.held(), self._tx() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """For a lookup of one statement: on PostgreSQL in autocommit, so that it is one
        round trip instead of three (``BEGIN``, the query, ``COMMIT``); a single statement
        sees one snapshot either way. SQLite's driver sends no ``BEGIN`` for a read."""
        if not self.postgres:
            with self._tx() as conn:
                yield conn
            return
        with self._autocommit.connect() as conn:
            yield conn

    def _write_outbox(self, conn: Connection, outbox: Outbox) -> None:
        """Events of a change, inside the change's own transaction: both or neither."""
        if outbox:
            if self.postgres:
                # Seqs that readers can take in order without a lock held through the commit
                # (storage/outboxseq.py). One outbox write per transaction: its events are
                # numbered from 0. SQLite serialises writers, and the rowid is the seq.
                outboxseq.check_fits(len(outbox))
                conn.execute(_INSERT_OUTBOX_POSTGRES,
                             [{**_row_dict(row), "n": n} for n, row in enumerate(outbox)])
            else:
                self._exec(conn, _INSERT_OUTBOX, [_row_dict(row) for row in outbox])
            for listener in self.outbox_listeners:
                listener()

    def write_events(self, outbox: Outbox) -> None:
        """Events that report no stored change of their own (clones, fetches)."""
        with self._write_tx() as conn:
            self._write_outbox(conn, outbox)

    # -- server settings ---------------------------------------------------------------
    def get_or_create_setting(self, key: str, make_value: str) -> str:
        """Return the stored value, storing ``make_value`` first if the key is new.

        Concurrent first callers (several workers starting) all end with the same value.
        """
        with self._tx() as conn:
            value = conn.execute(
                select(server_settings.c.value).where(server_settings.c.key == key)
            ).scalar_one_or_none()
            if value is not None:
                return str(value)
        try:
            with self._tx() as conn:
                conn.execute(insert(server_settings).values(key=key, value=make_value))
            return make_value
        except IntegrityError:
            with self._tx() as conn:
                return str(conn.execute(
                    select(server_settings.c.value).where(server_settings.c.key == key)
                ).scalar_one())

    # -- accounts and API tokens ---------------------------------------------------------
    def ensure_account(self, account_id: str, now_us: int) -> None:
        with self._tx() as conn:
            exists = conn.execute(
                select(accounts.c.id).where(accounts.c.id == account_id)
            ).first()
            if exists is None:
                with suppress(IntegrityError):  # created concurrently: as good as ours
                    conn.execute(insert(accounts).values(id=account_id, created_us=now_us))

    def insert_api_token(
        self, *, token_id: str, account_id: str, secret_hash: str, permission: str,
        name: str | None, now_us: int,
    ) -> None:
        with self._tx() as conn:
            conn.execute(insert(api_tokens).values(
                id=token_id, account_id=account_id, secret_hash=secret_hash,
                permission=permission, name=name, created_us=now_us,
            ))

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        self.engine.dispose()

    def find_api_token(self, secret_hash: str) -> ApiTokenRow | None:
        if self._fast is not None:
            found = self._fast.first(self._fast_api_token, {"h": secret_hash})
            return _from_mapping(ApiTokenRow, found) if found else None
        with self._read() as conn:
            row = conn.execute(_SELECT_API_TOKEN, {"h": secret_hash}).first()
        return _api_token(row) if row else None

    def list_api_tokens(self, account_id: str | None) -> list[ApiTokenRow]:
        query = select(api_tokens).order_by(api_tokens.c.created_us)
        if account_id:
            query = query.where(api_tokens.c.account_id == account_id)
        with self._tx() as conn:
            return [_api_token(r) for r in conn.execute(query)]

    def count_api_tokens(self) -> int:
        with self._tx() as conn:
            return int(conn.execute(select(func.count()).select_from(api_tokens)).scalar_one())

    def revoke_api_token(self, token_id: str, now_us: int) -> ApiTokenRow | None:
        with self._tx() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
            if row is None:
                return None
            if row.revoked_us is None:
                conn.execute(
                    update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_us=now_us)
                )
            return _api_token(row)

    # -- namespaces ----------------------------------------------------------------------
    def get_namespace(self, account_id: str, name: str) -> NamespaceRow | None:
        with self._tx() as conn:
            row = conn.execute(select(namespaces).where(
                namespaces.c.account_id == account_id, namespaces.c.name == name
            )).first()
        return NamespaceRow(row.account_id, row.name, row.created_us) if row else None

    def count_repos(
        self, account_id: str, namespace: str | None = None, search: str | None = None
    ) -> int:
        if namespace is not None and not search:
            # The running count (kept with every insert and delete), not a count of rows.
            with self._tx() as conn:
                base = conn.execute(select(namespaces.c.repo_count).where(
                    namespaces.c.account_id == account_id, namespaces.c.name == namespace,
                )).scalar()
                added = conn.execute(select(func.sum(namespace_repo_counts.c.delta)).where(
                    namespace_repo_counts.c.account_id == account_id,
                    namespace_repo_counts.c.namespace == namespace,
                )).scalar()
            return int(base or 0) + int(added or 0)
        query = select(func.count()).select_from(repos).where(repos.c.account_id == account_id)
        if namespace is not None:
            query = query.where(repos.c.namespace == namespace)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(repos.c.name.like(f"%{escaped}%", escape="\\"))
        with self._tx() as conn:
            return int(conn.execute(query).scalar_one())

    def count_repos_upto(self, account_id: str, namespace: str, cap: int) -> int:
        """The namespace's repo count, or ``cap`` when it has at least that many: reads at most
        ``cap`` index entries (the dashboard's counts stay cheap in a namespace of millions)."""
        first = select(repos.c.id).where(
            repos.c.account_id == account_id, repos.c.namespace == namespace
        ).limit(cap).subquery()
        with self._tx() as conn:
            return int(conn.execute(select(func.count()).select_from(first)).scalar_one())

    def count_all_repos(self) -> int:
        with self._tx() as conn:
            return int(conn.execute(select(func.count()).select_from(repos)).scalar_one())

    def list_namespaces(
        self, account_id: str, limit: int, after: str | None
    ) -> list[NamespaceRow]:
        query = select(namespaces).where(namespaces.c.account_id == account_id)
        if after is not None:
            query = query.where(namespaces.c.name > after)
        query = query.order_by(namespaces.c.name).limit(limit)
        with self._tx() as conn:
            return [NamespaceRow(r.account_id, r.name, r.created_us) for r in conn.execute(query)]

    # -- repos ---------------------------------------------------------------------------
    def create_repo(self, repo: RepoRow, token: RepoTokenRow | None, secret_hash: str | None,
                    outbox: Outbox = ()) -> None:
        """Insert the repo (and its namespace, and its first token) in one transaction."""
        try:
            if self.postgres:
                self._create_repo_postgres(repo, token, secret_hash, outbox)
                return
            with self._write_tx() as conn:
                ns_exists = self._exec(
                    conn, _SELECT_NAMESPACE_EXISTS, {"a": repo.account_id, "n": repo.namespace}
                ).first()
                if ns_exists is None:
                    insert_namespace = _INSERT_NAMESPACE_IF_NEW.get(self.engine.dialect.name,
                                                                    _INSERT_NAMESPACE)
                    self._exec(conn, insert_namespace, {
                        "account_id": repo.account_id, "name": repo.namespace,
                        "created_us": repo.created_us,
                    })
                self._exec(conn, _INSERT_REPO, _row_dict(repo))
                self._add_to_namespace(conn, repo.account_id, repo.namespace, 1, repo.id)
                if token is not None and secret_hash is not None:
                    self._exec(conn, _INSERT_TOKEN, {**_row_dict(token), "secret_hash": secret_hash})
                self._write_outbox(conn, outbox)
        except IntegrityError as exc:
            if self.get_repo(repo.account_id, repo.namespace, repo.name) is not None:
                raise Conflict(
                    f"A repo named {repo.name!r} already exists in namespace {repo.namespace!r}",
                    code=Code.REPO_EXISTS, pointer="/name",
                ) from exc
            raise

    def _create_repo_postgres(self, repo: RepoRow, token: RepoTokenRow | None,
                              secret_hash: str | None, outbox: Outbox) -> None:
        """The same rows as one statement in autocommit: one round trip (storage/pgcreate.py)."""
        outboxseq.check_fits(len(outbox))
        with_token = token is not None and secret_hash is not None
        token_values = {**_row_dict(token), "secret_hash": secret_hash} if with_token else None
        params = pgcreate.create_params(_row_dict(repo), token_values,
                                        [_row_dict(row) for row in outbox])
        statement = pgcreate.create_statement(with_token, len(outbox))
        if not isinstance(self._fast, PgLookups):  # fast_lookups=False: through SQLAlchemy
            with self._autocommit.connect() as conn:
                conn.execute(statement, params)
        else:
            held = self._fast
            try:
                held.write(statement, params)
            except OperationalError:
                # The held connection died under the statement (a database restart, a cut
                # idle connection), before or after the commit. Once more on a fresh
                # connection: the repo id is this create's own, so a duplicate of it is the
                # first try having committed.
                try:
                    held.write(statement, params, fresh=True)
                except IntegrityError:
                    if self.get_repo_by_id(repo.id) is None:
                        raise
        if outbox:
            for listener in self.outbox_listeners:
                listener()

    def get_repo(self, account_id: str, namespace: str, name: str) -> RepoRow | None:
        if self._fast is not None:
            found = self._fast.first(self._fast_repo_by_name, {"a": account_id, "ns": namespace, "n": name})
            return _from_mapping(RepoRow, found) if found else None
        with self._read() as conn:
            row = conn.execute(
                _SELECT_REPO_BY_NAME, {"a": account_id, "ns": namespace, "n": name}
            ).first()
        return _repo(row) if row else None

    def get_repo_by_id(self, repo_id: str) -> RepoRow | None:
        if self._fast is not None:
            found = self._fast.first(self._fast_repo_by_id, {"i": repo_id})
            return _from_mapping(RepoRow, found) if found else None
        with self._read() as conn:
            row = conn.execute(_SELECT_REPO_BY_ID, {"i": repo_id}).first()
        return _repo(row) if row else None

    def list_repos(
        self,
        account_id: str,
        namespace: str,
        *,
        sort: SortField,
        descending: bool,
        limit: int,
        after: tuple[Any, str] | None,
        search: str | None,
    ) -> list[RepoRow]:
        column = SORT_COLUMNS[sort]
        query = select(*_REPO_COLUMNS).where(
            repos.c.account_id == account_id, repos.c.namespace == namespace
        )
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(repos.c.name.like(f"%{escaped}%", escape="\\"))
        if after is not None:
            # A row-value comparison, not ``a < v OR (a = v AND id < i)``: both databases
            # turn the row value into an index range scan, the OR form into a scan of
            # everything before the cursor (O(n) deep in a large namespace). Written as SQL
            # text because SQLAlchemy expands ``tuple_() < tuple_()`` into the OR form on
            # SQLite; the column name comes from SORT_COLUMNS, never from the request.
            value, last_id = after
            operator = "<" if descending else ">"
            query = query.where(
                text(f"({column.name}, repos.id) {operator} (:cursor_value, :cursor_id)")
                .bindparams(cursor_value=value, cursor_id=last_id)
            )
        if descending:
            query = query.order_by(column.desc(), repos.c.id.desc())
        else:
            query = query.order_by(column.asc(), repos.c.id.asc())
        with self._tx() as conn:
            return [_repo(r) for r in conn.execute(query.limit(limit))]

    def delete_repo(self, repo_id: str, outbox: Outbox = ()) -> bool:
        with self._write_tx() as conn:
            # The lock of ``_lock_repo``, and one read for both the sizes and the place.
            by_id = {"p_repo": repo_id}
            self._exec(conn, _LOCK_REPO, by_id)
            locked = self._exec(conn, _LOCKED_REPO_PLACE, by_id).first()
            self._exec(conn, _DELETE_REPO_TOKENS, by_id)
            self._exec(conn, _DELETE_REPO_INTENTS, by_id)
            result = self._exec(conn, _DELETE_REPO, by_id)
            if locked is not None and result.rowcount:
                self._add_to_namespace(conn, locked.account_id, locked.namespace, -1, repo_id)
            if locked is not None:
                self._add_to_account(conn, locked.account_id, used=-int(locked.size_bytes),
                                     reserved=-int(locked.reserved_bytes))
            if result.rowcount:
                self._write_outbox(conn, outbox)
            return bool(result.rowcount)

    def _add_to_namespace(self, conn: Connection, account_id: str, namespace: str,
                          repos_added: int, repo_id: str = "") -> None:
        """Add to a shard of the namespace's count (see ``namespace_repo_counts``). PostgreSQL:
        one no other transaction holds, or a new one (storage/pgcreate.py), so that concurrent
        writers never wait on one another's commit. SQLite (one writer at a time): the shard
        ``repo_id`` picks."""
        if self.postgres:
            conn.execute(pgcreate.ADD_TO_NAMESPACE,
                         pgcreate.count_params(account_id, namespace, repos_added))
            return
        self._exec(conn, _ADD_TO_NAMESPACE_SQLITE, {
            "p_account_id": account_id, "p_namespace": namespace,
            "p_shard": zlib.crc32(repo_id.encode()) % REPO_COUNT_SHARDS, "p_delta": repos_added})

    def update_repo(self, repo_id: str, **values: Any) -> None:
        with self._tx() as conn:
            conn.execute(update(repos).where(repos.c.id == repo_id).values(**values))

    # -- storage accounting --------------------------------------------------------------
    # Every change of a repo's size goes through these methods, which change the account's
    # running total in the same transaction. Each starts by locking the repo's row with a
    # write: that takes SQLite's database write lock (pysqlite begins a transaction at its
    # first write, so a read first would run outside it) and PostgreSQL's row lock; every
    # transaction takes the repo row before the account row, so they cannot deadlock.

    def _lock_repo(self, conn: Connection, repo_id: str) -> tuple[int, int, str] | None:
        """Lock the repo's row; its (size_bytes, reserved_bytes, account_id), or None."""
        self._exec(conn, _LOCK_REPO, {"p_repo": repo_id})
        row = self._exec(conn, _LOCKED_REPO, {"p_repo": repo_id}).first()
        return (int(row.size_bytes), int(row.reserved_bytes), row.account_id) if row else None

    def _add_to_account(self, conn: Connection, account_id: str, used: int = 0,
                        reserved: int = 0) -> None:
        statement = _ADD_TO_ACCOUNT_PG if self.postgres else _ADD_TO_ACCOUNT_SQLITE
        self._exec(conn, statement, {"p_account_id": account_id, "p_used": used,
                                 "p_reserved": reserved})

    def account_size(self, account_id: str) -> int:
        """Bytes the account stores plus bytes reserved by pushes in flight: one row read."""
        if self._fast is not None:
            found = self._fast.first(self._fast_account_size, {"p_account_id": account_id})
            return int(found["size"]) if found else 0
        with self._tx() as conn:
            row = conn.execute(_ACCOUNT_SIZE, {"p_account_id": account_id}).first()
        return int(row[0]) if row else 0

    def account_usage(self, account_id: str) -> tuple[int, int]:
        """The account's running totals: (used_bytes, reserved_bytes)."""
        with self._tx() as conn:
            row = conn.execute(
                select(account_storage.c.used_bytes, account_storage.c.reserved_bytes)
                .where(account_storage.c.account_id == account_id)
            ).first()
        return (int(row.used_bytes), int(row.reserved_bytes)) if row else (0, 0)

    def set_repo_size(
        self, repo_id: str, size_bytes: int | Callable[[], int], *,
        account_limit: int | None = None, outbox: Outbox | Callable[[], Outbox] = (),
        grow_by: int | None = None, **values: Any,
    ) -> bool:
        """Record the repo's size (and other ``values``) and the account's total with it.

        ``size_bytes`` may be a function that measures the disk: it is then called with the
        row locked, so two writers of one repo cannot record their measurements out of
        order; ``grow_by`` instead adds to the recorded size, under the same lock. With
        ``account_limit``, a growth that would take the account past it is refused (False,
        nothing changed); False too when the repo row is gone.
        """
        try:
            with self._write_tx() as conn:
                locked = self._lock_repo(conn, repo_id)
                if locked is None:
                    return False
                old, _reserved, account_id = locked
                if grow_by is not None:  # the caller counted what it added: no measurement
                    new = old + grow_by
                else:
                    new = size_bytes() if callable(size_bytes) else size_bytes
                self._add_to_account(conn, account_id)
                delta = new - old
                within = account_limit is not None and delta > 0
                changed = self._exec(
                    conn, _GROW_ACCOUNT_WITHIN if within else _GROW_ACCOUNT,
                    {"p_account_id": account_id, "p_amount": delta,
                     **({"p_limit": account_limit} if within else {})},
                ).rowcount
                if not changed:
                    raise _Refused("account")
                if values:  # maintenance's and REST writes' extra columns: built per call
                    conn.execute(update(repos).where(repos.c.id == repo_id)
                                 .values(size_bytes=new, **values))
                else:
                    self._exec(conn, _SET_REPO_SIZE, {"p_repo": repo_id, "p_size": new})
                self._write_outbox(conn, outbox() if callable(outbox) else outbox)
        except _Refused:
            return False
        return True

    def reserve_push(
        self, intent: PushIntentRow, repo_limit: int, account_limit: int
    ) -> str | None:
        """Admit a push of ``intent.reserved_bytes``; None, or the limit that refused it.

        Each limit is one conditional update, so concurrent pushes into a repo or an
        account are admitted one after another against totals that include each other.
        """
        amount = intent.reserved_bytes
        try:
            with self._write_tx() as conn:
                if not self._exec(conn, _RESERVE_IN_REPO, {
                    "p_repo": intent.repo_id, "p_amount": amount, "p_limit": repo_limit,
                }).rowcount:
                    raise _Refused("repo")
                self._add_to_account(conn, intent.account_id)
                if not self._exec(conn, _RESERVE_IN_ACCOUNT, {
                    "p_account_id": intent.account_id, "p_amount": amount,
                    "p_limit": account_limit,
                }).rowcount:
                    raise _Refused("account")
                self._exec(conn, _INSERT_INTENT, _row_dict(intent))
        except _Refused as refused:
            return refused.reason
        return None

    def finish_push(
        self, intent_id: str, repo_id: str, measure: Callable[[], int], pushed_us: int | None,
        outbox: Outbox = (),
    ) -> bool:
        """Release a push's reservation and record what it did, in one transaction.

        ``measure`` gives the repo's size on disk; ``pushed_us`` is set when refs moved (then
        ``last_push_at`` and the maintenance counter change too). False when the intent was
        already finished (or its repo deleted): nothing is recorded twice.
        """
        with self._write_tx() as conn:
            locked = self._lock_repo(conn, repo_id)
            row = self._exec(conn, _INTENT_RESERVED, {"p_intent": intent_id}).first()
            if row is None:
                return False
            self._exec(conn, _DELETE_INTENT, {"p_intent": intent_id})
            if locked is None:
                return False
            old, _reserved, account_id = locked
            amount = int(row.reserved_bytes)
            new = measure()
            params: dict[str, Any] = {"p_repo": repo_id, "p_size": new, "p_amount": amount}
            if pushed_us is None:
                self._exec(conn, _RELEASE_PUSH, params)
            else:
                self._exec(conn, _RECORD_PUSH, {**params, "p_pushed": pushed_us})
            self._add_to_account(conn, account_id, used=new - old, reserved=-amount)
            self._write_outbox(conn, outbox)
        return True

    def pending_pushes(self, repo_id: str | None = None) -> list[PushIntentRow]:
        """Pushes admitted and not yet recorded (at start-up: left behind by a crash)."""
        if self._fast is not None and repo_id is not None:
            return [_from_mapping(PushIntentRow, found)
                    for found in self._fast.rows(self._fast_repo_intents, {"p_repo": repo_id})]
        query, params = ((select(push_intents), {}) if repo_id is None
                         else (_REPO_INTENTS, {"p_repo": repo_id}))
        with self._tx() as conn:
            return [PushIntentRow(**{f.name: getattr(r, f.name)
                                     for f in dataclasses.fields(PushIntentRow)})
                    for r in conn.execute(query, params)]

    def repos_due_for_maintenance(self, min_pushes: int, limit: int) -> list[RepoRow]:
        with self._tx() as conn:
            return [_repo(r) for r in conn.execute(
                select(*_REPO_COLUMNS)
                # A repo's first push makes it due too, so a small repo is compacted
                # promptly (refs packed) rather than after ``min_pushes`` pushes. The range
                # is on the pushes index; the maintained test filters within it.
                .where(repos.c.pushes_since_maintenance >= 1,
                       (repos.c.pushes_since_maintenance >= min_pushes)
                       | (repos.c.maintained_us == 0))
                .order_by(repos.c.pushes_since_maintenance.desc()).limit(limit)
            )]

    def record_repo_write(self, repo_id: str, now_us: int, measure: Callable[[], int],
                          *, grow_by: int | None = None) -> None:
        """A write that moved refs without a push (REST commits, merges): like a push, it
        sets ``last_push_at``, counts towards maintenance and records the measured size, or
        with ``grow_by`` (a write that knows the bytes of the objects it created) the
        recorded size plus those bytes, without walking the disk."""
        self.set_repo_size(repo_id, measure, last_push_us=now_us, updated_us=now_us,
                           pushes_since_maintenance=repos.c.pushes_since_maintenance + 1,
                           grow_by=grow_by)

    def finish_maintenance(
        self, repo_id: str, now_us: int, pushes_seen: int, size_bytes: int | Callable[[], int]
    ) -> None:
        """Record a maintenance; pushes that arrived meanwhile stay counted for the next one."""
        self.set_repo_size(
            repo_id, size_bytes, maintained_us=now_us,
            pushes_since_maintenance=func.max(repos.c.pushes_since_maintenance - pushes_seen, 0)
            if self.engine.dialect.name == "sqlite"
            else func.greatest(repos.c.pushes_since_maintenance - pushes_seen, 0),
        )

    def repos_with_status(self, status: str) -> list[RepoRow]:
        with self._tx() as conn:
            return [_repo(r) for r in conn.execute(
                select(*_REPO_COLUMNS).where(repos.c.status == status)
            )]

    def existing_repo_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` have a repo row (the orphan-directory sweep asks in batches)."""
        if not ids:
            return set()
        with self._tx() as conn:
            return {str(r[0]) for r in conn.execute(select(repos.c.id).where(repos.c.id.in_(list(ids))))}

    def bulk_insert_repos(self, rows: Sequence[dict[str, Any]]) -> None:
        """Seed many repos at once (benchmarks); rows are full ``repos`` column dicts."""
        totals: dict[str, int] = {}
        counts: dict[tuple[str, str], int] = {}
        for row in rows:
            totals[row["account_id"]] = totals.get(row["account_id"], 0) + row.get("size_bytes", 0)
            place = (row["account_id"], row["namespace"])
            counts[place] = counts.get(place, 0) + 1
        with self._tx() as conn:
            conn.execute(insert(repos), list(rows))
            for account_id, used in totals.items():
                self._add_to_account(conn, account_id, used=used)
            for (account_id, namespace), added in counts.items():
                self._add_to_namespace(conn, account_id, namespace, added)

    def ensure_namespace(self, account_id: str, name: str, now_us: int) -> None:
        with self._tx() as conn:
            if conn.execute(select(namespaces.c.name).where(
                namespaces.c.account_id == account_id, namespaces.c.name == name
            )).first() is None:
                conn.execute(insert(namespaces).values(
                    account_id=account_id, name=name, created_us=now_us
                ))

    # -- repo tokens ---------------------------------------------------------------------
    def insert_repo_token(self, token: RepoTokenRow, secret_hash: str, outbox: Outbox = ()) -> None:
        with self._write_tx() as conn:
            self._exec(conn, _INSERT_TOKEN, {**_row_dict(token), "secret_hash": secret_hash})
            self._write_outbox(conn, outbox)

    def find_repo_token(self, secret_hash: str) -> tuple[RepoTokenRow, RepoRow] | None:
        """The token with this secret and its repo, in one query (the git hot path)."""
        if self._fast is not None:
            found = self._fast.first(self._fast_token_with_repo, {"h": secret_hash})
            if found is None:
                return None
            return _from_mapping(RepoTokenRow, found), _from_mapping(RepoRow, found, prefix="r_")
        with self._read() as conn:
            row = conn.execute(_SELECT_TOKEN_WITH_REPO, {"h": secret_hash}).first()
        if row is None:
            return None
        mapping = row._mapping
        repo = RepoRow(**{f.name: mapping[f"r_{f.name}"] for f in dataclasses.fields(RepoRow)})
        return _token(row), repo

    def get_repo_token(self, token_id: str) -> RepoTokenRow | None:
        if self._fast is not None:
            found = self._fast.first(self._fast_token_by_id, {"i": token_id})
            return _from_mapping(RepoTokenRow, found) if found else None
        with self._read() as conn:
            row = conn.execute(_SELECT_TOKEN_BY_ID, {"i": token_id}).first()
        return _token(row) if row else None

    def list_repo_tokens(
        self, repo_id: str, state: str, now_us: int, offset: int, limit: int
    ) -> tuple[list[RepoTokenRow], int]:
        condition = repo_tokens.c.repo_id == repo_id
        if state == "active":
            condition = and_(condition, repo_tokens.c.revoked_us.is_(None),
                             repo_tokens.c.expires_us > now_us)
        elif state == "expired":
            condition = and_(condition, repo_tokens.c.revoked_us.is_(None),
                             repo_tokens.c.expires_us <= now_us)
        elif state == "revoked":
            condition = and_(condition, repo_tokens.c.revoked_us.is_not(None))
        with self._tx() as conn:
            total = int(conn.execute(
                select(func.count()).select_from(repo_tokens).where(condition)
            ).scalar_one())
            rows = conn.execute(
                select(*_TOKEN_COLUMNS).where(condition)
                .order_by(repo_tokens.c.created_us.desc(), repo_tokens.c.id)
                .offset(offset).limit(limit)
            )
            return [_token(r) for r in rows], total

    def revoke_repo_token(self, token_id: str, now_us: int, outbox: Outbox = ()) -> bool:
        """Revoke if not yet revoked; False when it already was."""
        with self._tx() as conn:
            result = conn.execute(
                update(repo_tokens)
                .where(repo_tokens.c.id == token_id, repo_tokens.c.revoked_us.is_(None))
                .values(revoked_us=now_us)
            )
            if result.rowcount:
                self._write_outbox(conn, outbox)
            return bool(result.rowcount)
