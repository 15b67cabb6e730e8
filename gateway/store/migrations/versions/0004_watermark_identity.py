"""The watermark identity an account is served under, when not its own id
(``accounts.watermark_identity``: a flagged campaign's cohort, ``gateway.domain.cohorts``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Mirrors ``Account.watermark_identity`` in ``gateway/store/models.py``; nullable, so adding it
rewrites no row on PostgreSQL or SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("watermark_identity", sa.String(80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("watermark_identity")
