"""The s3 repo store (issue 16): repo generations, refs, pack lists, packs, maintenance leases.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "s3_repos",
        sa.Column("repo_id", sa.String(32), primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "s3_refs",
        sa.Column("repo_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(1024), primary_key=True),
        sa.Column("target", sa.String(64), nullable=False),
    )
    op.create_table(
        "s3_repo_packs",
        sa.Column("repo_id", sa.String(32), primary_key=True),
        sa.Column("pack", sa.String(64), primary_key=True),
    )
    op.create_index("ix_s3_repo_packs_pack", "s3_repo_packs", ["pack"])
    op.create_table(
        "s3_packs",
        sa.Column("pack", sa.String(64), primary_key=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("touched_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_s3_packs_touched", "s3_packs", ["touched_us"])
    op.create_table(
        "s3_leases",
        sa.Column("repo_id", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(32), nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("s3_leases")
    op.drop_index("ix_s3_packs_touched", "s3_packs")
    op.drop_table("s3_packs")
    op.drop_index("ix_s3_repo_packs_pack", "s3_repo_packs")
    op.drop_table("s3_repo_packs")
    op.drop_table("s3_refs")
    op.drop_table("s3_repos")
