"""A running repo count per namespace.

``namespaces.repo_count`` is kept in the same transaction as every repo insert and delete,
so that a namespace's repo count (``GET /namespaces/:ns``) and a repo list's
``result_info.total_count`` read one row instead of counting the namespace's repos.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "namespaces",
        sa.Column("repo_count", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.execute(
        "UPDATE namespaces SET repo_count = (SELECT count(*) FROM repos "
        "WHERE repos.account_id = namespaces.account_id AND repos.namespace = namespaces.name)"
    )


def downgrade() -> None:
    with op.batch_alter_table("namespaces") as batch:
        batch.drop_column("repo_count")
