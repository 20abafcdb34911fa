"""A repo create on PostgreSQL as one statement, and namespace count shards that never wait.

A create inserts up to five rows (namespace if new, repo, count shard, first token, event).
As separate statements in a transaction that is seven round trips (``BEGIN``, a
namespace lookup, four inserts, ``COMMIT``); as one statement of data-modifying CTEs sent in autocommit it is
one, and a single statement is all or nothing like the transaction was. A duplicate name
fails the whole statement, which changes nothing (``MetadataStore.create_repo`` turns it
into the usual 409).

The namespace's running count is split over rows of ``namespace_repo_counts``. A writer
takes a row no other transaction holds (``FOR UPDATE SKIP LOCKED``), or adds a row when all
are held, so concurrent creates in one namespace never wait on one another's commit; a
namespace has about as many rows as it has had concurrent writers. Picking a row by repo id
instead made two of 16 concurrent creates meet on one of 32 rows 15% of the time.

Every statement is built once from table and column names, never from a request.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, TextClause, text

from artifactd.storage import outboxseq
from artifactd.storage.schema import event_outbox, repo_tokens, repos

# New shard numbers are drawn at random from this range: two writers adding a row at the
# same time practically never draw the same number (and if they do, ON CONFLICT adds to it).
_NEW_SHARD_RANGE = 1 << 30


def _insert(table: Table, prefix: str, columns: Sequence[str]) -> str:
    names = ", ".join(columns)
    values = ", ".join(f":{prefix}{c}" for c in columns)
    return f"INSERT INTO {table.name} ({names}) VALUES ({values})"


def _shard_ctes(suffix: str = "") -> str:
    """CTEs adding ``:count_added`` to a free shard of ``(:count_account, :count_namespace)``,
    or to a new one (``:count_new_shard``) when every shard is held."""
    return f"""
free{suffix} AS (
    SELECT shard FROM namespace_repo_counts
    WHERE account_id = :count_account AND namespace = :count_namespace
    LIMIT 1 FOR UPDATE SKIP LOCKED),
took{suffix} AS (
    UPDATE namespace_repo_counts AS c SET delta = c.delta + :count_added
    FROM free{suffix}
    WHERE c.account_id = :count_account AND c.namespace = :count_namespace
      AND c.shard = free{suffix}.shard),
added{suffix} AS (
    INSERT INTO namespace_repo_counts (account_id, namespace, shard, delta)
    SELECT CAST(:count_account AS VARCHAR), CAST(:count_namespace AS VARCHAR),
           CAST(:count_new_shard AS INTEGER), CAST(:count_added AS BIGINT)
    WHERE NOT EXISTS (SELECT 1 FROM free{suffix})
    ON CONFLICT (account_id, namespace, shard)
    DO UPDATE SET delta = namespace_repo_counts.delta + excluded.delta)"""


# Added to a namespace's count (delete: -1; a count corrected by hand: any) in the caller's
# transaction.
ADD_TO_NAMESPACE: TextClause = text(f"WITH {_shard_ctes()} SELECT 1")

_REPO_COLUMNS = [c.name for c in repos.c]
_TOKEN_COLUMNS = [c.name for c in repo_tokens.c]
_OUTBOX_COLUMNS = [c.name for c in event_outbox.c if c.name != "seq"]


@functools.cache
def create_statement(with_token: bool, events: int) -> TextClause:
    """The one statement of a create with (or without) its first token and ``events``
    outbox rows."""
    ctes = [
        "ns AS (INSERT INTO namespaces (account_id, name, created_us) "
        "VALUES (:count_account, :count_namespace, :ns_created_us) "
        "ON CONFLICT (account_id, name) DO NOTHING)",
        f"repo AS ({_insert(repos, 'r_', _REPO_COLUMNS)})",
        _shard_ctes().strip(),
    ]
    if with_token:
        ctes.append(f"token AS ({_insert(repo_tokens, 't_', _TOKEN_COLUMNS)})")
    if events:
        rows = ", ".join(
            f"({outboxseq.SEQ_SQL} + {n}, " + ", ".join(f":o{n}_{c}" for c in _OUTBOX_COLUMNS) + ")"
            for n in range(events))
        ctes.append(f"outbox AS (INSERT INTO event_outbox (seq, {', '.join(_OUTBOX_COLUMNS)}) "
                    f"VALUES {rows})")
    return text("WITH " + ",\n".join(ctes) + "\nSELECT 1")


def create_params(repo: Mapping[str, Any], token: Mapping[str, Any] | None,
                  outbox: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The bind parameters of ``create_statement(token is not None, len(outbox))``; ``token``
    includes its ``secret_hash``."""
    params = {f"r_{c}": repo[c] for c in _REPO_COLUMNS}
    params.update(count_params(str(repo["account_id"]), str(repo["namespace"]), 1))
    params["ns_created_us"] = repo["created_us"]
    if token is not None:
        params.update({f"t_{c}": token[c] for c in _TOKEN_COLUMNS})
    for n, row in enumerate(outbox):
        params.update({f"o{n}_{c}": row[c] for c in _OUTBOX_COLUMNS})
    return params


def count_params(account_id: str, namespace: str, added: int) -> dict[str, Any]:
    return {"count_account": account_id, "count_namespace": namespace, "count_added": added,
            "count_new_shard": secrets.randbelow(_NEW_SHARD_RANGE)}

