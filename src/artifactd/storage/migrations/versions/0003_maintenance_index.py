"""Index for the maintenance scheduler's "which repos are due" query.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_repos_pushes_pending", "repos", ["pushes_since_maintenance"])


def downgrade() -> None:
    op.drop_index("ix_repos_pushes_pending", "repos")
