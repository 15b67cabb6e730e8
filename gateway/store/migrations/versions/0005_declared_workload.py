"""An account's declared workload (``accounts.workload``: ``gateway.domain.workloads``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

Mirrors ``Account.workload`` in ``gateway/store/models.py``; nullable, so adding it rewrites
no row on PostgreSQL or SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("workload", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("workload")
