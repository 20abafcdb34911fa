"""Initial schema: accounts, API tokens, namespaces, repos, repo tokens.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("permission", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("revoked_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "namespaces",
        sa.Column("account_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "repos",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("default_branch", sa.String(255), nullable=False),
        sa.Column("read_only", sa.Boolean, nullable=False),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text, nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("last_push_us", sa.BigInteger, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("maintained_us", sa.BigInteger, nullable=False),
        sa.Column("pushes_since_maintenance", sa.Integer, nullable=False),
        sa.Column("import_spec", sa.Text, nullable=True),
        sa.UniqueConstraint("account_id", "namespace", "name", name="uq_repos_name"),
    )
    op.create_index("ix_repos_created", "repos", ["account_id", "namespace", "created_us", "id"])
    op.create_index("ix_repos_updated", "repos", ["account_id", "namespace", "updated_us", "id"])
    op.create_index("ix_repos_pushed", "repos", ["account_id", "namespace", "last_push_us", "id"])
    op.create_index("ix_repos_status", "repos", ["status"])
    op.create_table(
        "repo_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column(
            "repo_id", sa.String(32), sa.ForeignKey("repos.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
        sa.Column("revoked_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_repo_tokens_repo", "repo_tokens", ["repo_id", "created_us"])


def downgrade() -> None:
    for table in ("repo_tokens", "repos", "namespaces", "api_tokens", "accounts", "server_settings"):
        op.drop_table(table)
