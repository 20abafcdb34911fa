"""Running storage totals per account, push reservations and push intents.

``account_storage`` is backfilled from the repos' recorded sizes, so that the account
limit check reads one row instead of summing every repo of the account.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "repos",
        sa.Column("reserved_bytes", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "account_storage",
        sa.Column("account_id", sa.String(32), primary_key=True),
        sa.Column("used_bytes", sa.BigInteger, nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO account_storage (account_id, used_bytes, reserved_bytes) "
        "SELECT account_id, COALESCE(SUM(size_bytes), 0), 0 FROM repos GROUP BY account_id"
    )
    op.create_table(
        "push_intents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("repo_id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger, nullable=False),
        sa.Column("updates", sa.Text, nullable=False),
        sa.Column("started_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_push_intents_repo", "push_intents", ["repo_id"])


def downgrade() -> None:
    op.drop_index("ix_push_intents_repo", "push_intents")
    op.drop_table("push_intents")
    op.drop_table("account_storage")
    op.drop_column("repos", "reserved_bytes")
