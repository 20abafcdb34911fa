"""A namespace's running repo count split into shards (issue 12: PostgreSQL at parity).

Every create and delete in a namespace updated its one ``namespaces`` row, and PostgreSQL
holds that row's lock until the commit is flushed: all creates of a namespace queued behind
one another's fsync. They now add to one of 32 rows of ``namespace_repo_counts``, picked by
repo id; the count is ``namespaces.repo_count`` (the base, kept) plus the sum of the shards.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "namespace_repo_counts",
        sa.Column("account_id", sa.String(32), primary_key=True),
        sa.Column("namespace", sa.String(64), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("delta", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    # Fold the shards back into the one row before dropping them.
    op.execute(
        "UPDATE namespaces SET repo_count = repo_count + COALESCE((SELECT sum(delta) FROM "
        "namespace_repo_counts c WHERE c.account_id = namespaces.account_id "
        "AND c.namespace = namespaces.name), 0)"
    )
    op.drop_table("namespace_repo_counts")
