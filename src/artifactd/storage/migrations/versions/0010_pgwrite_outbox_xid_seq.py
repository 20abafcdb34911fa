"""Outbox seqs from the writing transaction's id on PostgreSQL (issue 12: PostgreSQL at parity).

Event writers took one advisory lock held through their commit, so that seqs became visible
in order; every create queued behind the previous one's WAL flush. A seq on PostgreSQL is now
``xid << 16 | n`` (the writing transaction's ``pg_current_xact_id()``, the event's index in
it), and readers take only seqs below ``pg_snapshot_xmin`` shifted the same way: every
transaction below that horizon has ended, and every later one gets a larger id, so no event
can become visible below a cursor. The column (and its serial's sequence) must hold 64
bits; SQLite's already does. A restore into PostgreSQL renumbers events (restore.py).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE event_outbox ALTER COLUMN seq TYPE bigint")
        # The serial's sequence, no longer drawn from, is still what a restore moves past
        # the loaded seqs (tabledump.reset_sequences): it must take 64-bit values too.
        op.execute("ALTER SEQUENCE IF EXISTS event_outbox_seq_seq AS bigint")


def downgrade() -> None:
    # Seqs written since do not fit 32 bits: keep the column wide.
    pass
