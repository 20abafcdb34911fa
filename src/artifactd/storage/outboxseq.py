"""Outbox seqs on PostgreSQL: ordered by writing transaction, read below a horizon.

A cursor reader moves past the highest seq it has seen, so a seq must never become visible
below a cursor. A PostgreSQL sequence hands seqs out at insert, not at commit (seq 10 can
commit before seq 9, which a cursor at 10 would then skip for ever); a lock held through the
commit fixed that, but made every event writer commit, WAL flush included, one at a time.

Instead a seq is the writing transaction's id shifted left by ``SHIFT`` plus the event's
index in the transaction, and a reader takes only seqs below ``pg_snapshot_xmin`` of its own
snapshot shifted the same way. Every transaction with an id below that xmin has ended
(committed and visible, or rolled back), and a transaction that has not ended has an id at
least xmin, so everything a reader takes is final and everything that commits later sorts
after it. The cost: an event waits to be read until every transaction older than its own has
ended (milliseconds normally; as long as the oldest open transaction of the cluster).

Events are ordered by the first write of their transaction rather than by commit; two
changes to one repo take its row lock in their first write, so they keep their order.
SQLite serialises writers, and its seqs stay the rowid.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ColumnElement, bindparam, literal_column

# Bits for an event's index within its transaction: 65,536 events per transaction, and
# transaction ids up to 2**47 (a cluster doing 10,000 write transactions a second for 400 years).
SHIFT = 16
MAX_PER_TRANSACTION = 1 << SHIFT

# The first seq of the current transaction's events; its ``n``-th event gets this plus n.
# ``pg_current_xact_id`` gives the transaction an id if it has none yet.
SEQ_SQL = f"(pg_current_xact_id()::text::bigint << {SHIFT})"


def written_seq(index: ColumnElement[int] | int) -> ColumnElement[int]:
    """The seq of the ``index``-th event the current transaction writes."""
    return literal_column(SEQ_SQL, BigInteger) + index


def check_fits(events: int) -> None:
    """Refuse more events in one transaction than the index bits can number."""
    if events > MAX_PER_TRANSACTION:
        raise ValueError(f"{events} events in one transaction: at most {MAX_PER_TRANSACTION}")


# For an executemany whose rows carry their index as ``n``.
WRITTEN_SEQ = written_seq(bindparam("n", type_=BigInteger))

# The seqs a reader may take are those below this, evaluated in the reader's statement
# (whose snapshot it is).
READ_HORIZON: ColumnElement[int] = literal_column(
    f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {SHIFT})", BigInteger)
