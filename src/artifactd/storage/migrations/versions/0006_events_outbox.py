"""Events (issue 14): the outbox, subscriptions with their cursors, webhook attempts.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("repo_name", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_event_outbox_account", "event_outbox", ["account_id", "seq"])
    op.create_index("ix_event_outbox_created", "event_outbox", ["created_us"])
    op.create_table(
        "event_subscriptions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source_type", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(64), nullable=True),
        sa.Column("repo_name", sa.String(64), nullable=True),
        sa.Column("event_types", sa.Text, nullable=False),
        sa.Column("destination", sa.String(8), nullable=False),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("secret", sa.Text, nullable=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("paused_reason", sa.Text, nullable=True),
        sa.Column("cursor_seq", sa.BigInteger, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_failure_us", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("next_attempt_us", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("claimed_by", sa.String(32), nullable=True),
        sa.Column("claimed_until_us", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_event_subscriptions_account", "event_subscriptions", ["account_id", "created_us"])
    op.create_index("ix_event_subscriptions_due", "event_subscriptions",
                    ["destination", "state", "next_attempt_us"])
    op.create_table(
        "event_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("response_snippet", sa.Text, nullable=True),
        sa.Column("attempted_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_event_deliveries_pending", "event_deliveries", ["outcome", "subscription_id"])
    op.create_index("ix_event_deliveries_subscription", "event_deliveries", ["subscription_id", "id"])


def downgrade() -> None:
    op.drop_table("event_deliveries")
    op.drop_index("ix_event_deliveries_subscription", "event_deliveries")
    op.drop_index("ix_event_deliveries_pending", "event_deliveries")
    op.drop_table("event_subscriptions")
    op.drop_index("ix_event_subscriptions_due", "event_subscriptions")
    op.drop_index("ix_event_subscriptions_account", "event_subscriptions")
    op.drop_table("event_outbox")
    op.drop_index("ix_event_outbox_created", "event_outbox")
    op.drop_index("ix_event_outbox_account", "event_outbox")
