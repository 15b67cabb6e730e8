"""The request log range-partitioned by day on PostgreSQL (``gateway.store.partitions``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

The unpartitioned table is renamed aside, a partitioned one with the same columns takes its
name (primary key ``(request_id, created_at)``: a partitioned table's unique keys must include
the partition column; a record keeps its ``created_at`` through spills and replays, so inserts
stay idempotent), with a DEFAULT partition and one partition per day from the oldest record to
``AHEAD_DAYS`` past today; the rows are copied across and the old table dropped, all in the
migration's transaction. On a large table this copies every row: run it in a maintenance window.
SQLite (the local mode) keeps its one table: nothing to do there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from alembic import op
from sqlalchemy import text

from gateway.store import partitions as parts

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "request_records_unpartitioned"
INDEXES = (("ix_request_records_account_created", "account_id, created_at"),
           ("ix_request_records_created_at", "created_at"))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or parts.is_partitioned(bind):
        return
    op.execute(f"ALTER TABLE {parts.TABLE} RENAME TO {OLD}")
    op.execute(f"ALTER TABLE {OLD} RENAME CONSTRAINT {parts.TABLE}_pkey TO {OLD}_pkey")
    for name, _ in INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_old")
    op.execute(f"CREATE TABLE {parts.TABLE} (LIKE {OLD} INCLUDING DEFAULTS) "
               "PARTITION BY RANGE (created_at)")
    op.execute(f"ALTER TABLE {parts.TABLE} ADD CONSTRAINT {parts.TABLE}_pkey "
               "PRIMARY KEY (request_id, created_at)")
    for name, columns in INDEXES:
        op.execute(f"CREATE INDEX {name} ON {parts.TABLE} ({columns})")
    op.execute(f"CREATE TABLE {parts.DEFAULT_PARTITION} PARTITION OF {parts.TABLE} DEFAULT")
    oldest = bind.execute(text(f"SELECT min(created_at AT TIME ZONE 'UTC')::date FROM {OLD}"))  # noqa: S608
    today = parts.today()
    first = min(oldest.scalar() or today, today)
    parts.ensure(bind, first, today + timedelta(days=parts.AHEAD_DAYS))
    op.execute(f"INSERT INTO {parts.TABLE} SELECT * FROM {OLD}")  # noqa: S608
    op.execute(f"DROP TABLE {OLD}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not parts.is_partitioned(bind):
        return
    op.execute(f"CREATE TABLE {OLD} (LIKE {parts.TABLE} INCLUDING DEFAULTS)")
    op.execute(f"INSERT INTO {OLD} SELECT * FROM {parts.TABLE}")  # noqa: S608
    op.execute(f"DROP TABLE {parts.TABLE}")  # drops its partitions with it
    op.execute(f"ALTER TABLE {OLD} RENAME TO {parts.TABLE}")
    op.execute(f"ALTER TABLE {parts.TABLE} ADD CONSTRAINT {parts.TABLE}_pkey "
               "PRIMARY KEY (request_id)")
    for name, columns in INDEXES:
        op.execute(f"CREATE INDEX {name} ON {parts.TABLE} ({columns})")
