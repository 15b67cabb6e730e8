"""Extraction flags: ``flags`` and the accounts each covers (``flag_accounts``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-03-02

Mirrors ``Flag`` and ``FlagAccount`` in ``gateway/store/models.py``; runs on PostgreSQL and
SQLite alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flags",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column(
            "account_id", sa.String(40),
            sa.ForeignKey("accounts.id", name="flags_account_id_fkey"), nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("account_ids", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_by", sa.String(200), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
    )
    op.create_index("ix_flags_account_id", "flags", ["account_id"])
    op.create_index("ix_flags_created_at", "flags", ["created_at"])
    op.create_index("ix_flags_status_created", "flags", ["status", "created_at"])
    op.create_table(
        "flag_accounts",
        sa.Column(
            "flag_id", sa.String(40),
            sa.ForeignKey("flags.id", name="flag_accounts_flag_id_fkey"), primary_key=True,
        ),
        sa.Column(
            "account_id", sa.String(40),
            sa.ForeignKey("accounts.id", name="flag_accounts_account_id_fkey"),
            primary_key=True,
        ),
    )
    op.create_index("ix_flag_accounts_account_id", "flag_accounts", ["account_id"])


def downgrade() -> None:
    op.drop_table("flag_accounts")
    op.drop_table("flags")
