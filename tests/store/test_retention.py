"""Retention deletes request records past the horizon, in batches, and keeps the rest."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.records import utcnow
from gateway.store.models import RequestRow
from gateway.store.retention import delete_request_records_older_than
from tests.store.helpers import record, stored_ids


async def test_deletes_old_records_and_keeps_new_ones(engine: AsyncEngine) -> None:
    now = utcnow()
    old = [record("old", created_at=now - timedelta(days=100 + i)) for i in range(25)]
    just_old = [record("edge", created_at=now - timedelta(days=30, minutes=5))]
    new = [record("new", created_at=now - timedelta(days=29, hours=23))] + [
        record("new", created_at=now - timedelta(days=i)) for i in range(10)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(RequestRow), [r.to_row() for r in old + just_old + new])

    deleted = await delete_request_records_older_than(engine, days=30, batch_size=7)

    assert deleted == 26
    assert sorted(await stored_ids(engine)) == sorted(r.request_id for r in new)
    assert await delete_request_records_older_than(engine, days=30, batch_size=7) == 0


async def test_rejects_nonsense_arguments(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError):
        await delete_request_records_older_than(engine, days=-1)
    with pytest.raises(ValueError):
        await delete_request_records_older_than(engine, days=1, batch_size=0)
