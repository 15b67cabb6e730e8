"""Initial schema: accounts, API keys, request records, enforcement actions, audit log.

Revision ID: 0001
Revises:
Create Date: 2024-06-01

Mirrors ``gateway/store/models.py`` exactly. Written by hand; the same file runs on
PostgreSQL and SQLite (the only dialect difference, BIGINT vs INTEGER ids, is the same
``with_variant`` the models use, so SQLite keeps its rowid autoincrement).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_INT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(40), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=True),
        sa.Column("risk_score", sa.Float(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
    )
    for column in ("status", "tier", "risk_score", "created_at"):
        op.create_index(f"ix_accounts_{column}", "accounts", [column])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "account_id", sa.String(40),
            sa.ForeignKey("accounts.id", name="api_keys_account_id_fkey"), nullable=False,
        ),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        _timestamp("created_at"),
        _timestamp("revoked_at", nullable=True),
        sa.UniqueConstraint("key_hash", name="api_keys_key_hash_key"),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])

    op.create_table(
        "request_records",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), nullable=True),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("tier", sa.String(40), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("upstream_latency_ms", sa.Float(), nullable=True),
        sa.Column("ttfb_ms", sa.Float(), nullable=True),
        sa.Column("client_addr", sa.String(64), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("max_tokens", sa.Integer(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("top_p", sa.Float(), nullable=True),
        sa.Column("logprobs", sa.Boolean(), nullable=False),
        sa.Column("top_logprobs", sa.Integer(), nullable=True),
        sa.Column("logit_bias_size", sa.Integer(), nullable=False),
        sa.Column("prompt_chars", sa.Integer(), nullable=False),
        sa.Column("prompt_hash", sa.String(64), nullable=True),
        sa.Column("prompt_text", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        _timestamp("created_at"),
    )
    op.create_index(
        "ix_request_records_account_created", "request_records", ["account_id", "created_at"]
    )
    op.create_index("ix_request_records_created_at", "request_records", ["created_at"])

    op.create_table(
        "enforcement_actions",
        sa.Column("id", BIG_INT_PK, primary_key=True, autoincrement=True),
        sa.Column(
            "account_id", sa.String(40),
            sa.ForeignKey("accounts.id", name="enforcement_actions_account_id_fkey"),
            nullable=False,
        ),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("previous_status", sa.String(16), nullable=False),
        sa.Column("new_status", sa.String(16), nullable=False),
        _timestamp("created_at"),
    )
    op.create_index(
        "ix_enforcement_actions_account_id", "enforcement_actions", ["account_id"]
    )

    op.create_table(
        "audit_log",
        sa.Column("id", BIG_INT_PK, primary_key=True, autoincrement=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        _timestamp("created_at"),
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("enforcement_actions")
    op.drop_table("request_records")
    op.drop_table("api_keys")
    op.drop_table("accounts")
