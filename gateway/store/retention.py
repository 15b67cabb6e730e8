"""Retention of request records: whole days dropped, the rest deleted in bounded batches.

On PostgreSQL the request log is partitioned by day (:mod:`gateway.store.partitions`): every
day wholly past the horizon goes with one ``DROP TABLE``. What remains past it (the horizon's
own partial day, records in the default partition) is deleted in batches, each its own short
transaction, so a large purge neither holds locks for long nor bloats one transaction (and on
SQLite, never blocks the request-log writer for long).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import partitions
from gateway.store.models import RequestRow


async def delete_request_records_older_than(
    engine: AsyncEngine, days: int, batch_size: int = 10_000
) -> int:
    """Delete request records created more than ``days`` days ago; returns how many went.

    Partitions first (PostgreSQL), then ``DELETE ... WHERE request_id IN (SELECT ... LIMIT n)``
    batches, served by the ``created_at`` index, on PostgreSQL and SQLite alike.
    """
    if days < 0 or batch_size < 1:
        raise ValueError("days must be >= 0 and batch_size >= 1")
    cutoff = datetime.now(UTC) - timedelta(days=days)
    deleted = 0
    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            _, deleted = await conn.run_sync(partitions.drop_before, cutoff)
    doomed = (
        select(RequestRow.request_id)
        .where(RequestRow.created_at < cutoff)
        .limit(batch_size)
        .scalar_subquery()
    )
    statement = delete(RequestRow).where(RequestRow.request_id.in_(doomed))
    while True:
        async with engine.begin() as conn:
            result = await conn.execute(statement)
        deleted += result.rowcount
        if result.rowcount < batch_size:
            return deleted
