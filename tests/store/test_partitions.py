"""On PostgreSQL (``pg_engine``: a fresh database, migrated) the request log is partitioned by
day: records land in their day's partition (or the default one, never refused), retention
drops whole days, and an account's requests over a window read only that window's partitions."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import cli
from gateway.metrics import Metrics
from gateway.records import utcnow
from gateway.store import partitions, repository
from gateway.store.models import RequestRow
from gateway.store.retention import delete_request_records_older_than
from tests.store.conftest import WriterFactory
from tests.store.helpers import record, stored_ids
from tests.support.waiting import wait_until_async


async def _where(engine: AsyncEngine) -> dict[str, str]:
    """request_id -> the partition holding it."""
    async with engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT request_id, tableoid::regclass::text FROM request_records"))
        return {str(r[0]): str(r[1]) for r in rows}


async def _insert(engine: AsyncEngine, rows: list[dict[str, object]]) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(RequestRow), rows)


async def test_migration_leaves_today_and_a_week_ahead_ready(pg_engine: AsyncEngine) -> None:
    async with pg_engine.connect() as conn:
        assert await conn.run_sync(partitions.is_partitioned)
        days = await conn.run_sync(partitions.days)
        names = await conn.run_sync(partitions.partitions)
    today = partitions.today()
    assert [today + timedelta(days=i) for i in range(partitions.AHEAD_DAYS + 1)] == days[-8:]
    assert partitions.DEFAULT_PARTITION in names


async def test_records_land_in_their_day_or_the_default_partition(pg_engine: AsyncEngine) -> None:
    now = utcnow()
    recent, ancient = record("recent", created_at=now), record(
        "ancient", created_at=now - timedelta(days=400))
    await _insert(pg_engine, [recent.to_row(), ancient.to_row()])

    where = await _where(pg_engine)

    assert where[recent.request_id] == partitions.partition_name(now.date())
    assert where[ancient.request_id] == partitions.DEFAULT_PARTITION  # kept, not refused


async def test_a_new_day_takes_its_rows_out_of_the_default_partition(
        pg_engine: AsyncEngine) -> None:
    old = utcnow() - timedelta(days=400)
    rows = [record("old", created_at=old + timedelta(minutes=i)) for i in range(5)]
    await _insert(pg_engine, [r.to_row() for r in rows])

    async with pg_engine.begin() as conn:
        made = await conn.run_sync(partitions.ensure, old.date(), old.date())

    assert made == [old.date()]
    where = await _where(pg_engine)
    assert {where[r.request_id] for r in rows} == {partitions.partition_name(old.date())}
    assert len(where) == 5  # moved, not copied


async def test_a_record_written_twice_is_stored_once(pg_engine: AsyncEngine) -> None:
    """The writer's idempotent insert on the partitioned key (request_id, created_at)."""
    from gateway.store.writer import insert_ignoring_duplicates

    row = record("twice").to_row()
    statement = insert_ignoring_duplicates("postgresql", RequestRow.__table__)  # type: ignore[arg-type]
    async with pg_engine.begin() as conn:
        await conn.execute(statement, [row])
        await conn.execute(statement, [row])
    assert await stored_ids(pg_engine) == [row["request_id"]]


async def test_retention_drops_whole_days_and_deletes_the_rest(pg_engine: AsyncEngine) -> None:
    now = utcnow()
    first = (now - timedelta(days=40)).date()
    async with pg_engine.begin() as conn:
        await conn.run_sync(partitions.ensure, first, now.date())
    old = [record("old", created_at=now - timedelta(days=35 + i % 5)) for i in range(20)]
    stray = [record("stray", created_at=now - timedelta(days=500))]  # default partition
    new = [record("new", created_at=now - timedelta(days=i)) for i in range(10)]
    await _insert(pg_engine, [r.to_row() for r in old + stray + new])

    deleted = await delete_request_records_older_than(pg_engine, days=30, batch_size=7)

    assert deleted == 21
    assert sorted(await stored_ids(pg_engine)) == sorted(r.request_id for r in new)
    async with pg_engine.connect() as conn:
        days = await conn.run_sync(partitions.days)
    horizon = (now - timedelta(days=30)).date()
    assert min(days) >= horizon  # the days before it are gone, not emptied
    assert await delete_request_records_older_than(pg_engine, days=30) == 0


async def _equals(value: float | None, expected: float) -> bool:
    return value == expected


def _scanned(plan: object) -> set[str]:
    """Relations a JSON EXPLAIN plan reads."""
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            found.add(str(plan["Relation Name"]))
        for value in plan.values():
            found |= _scanned(value)
    elif isinstance(plan, list):
        for value in plan:
            found |= _scanned(value)
    return found


async def _explain(engine: AsyncEngine, since: datetime, until: datetime,
                   cursor: str | None = None) -> set[str]:
    query = repository.requests_query("acct_1", since=since, until=until, cursor=cursor)
    sql = str(query.limit(51).compile(dialect=postgresql.dialect(),
                                      compile_kwargs={"literal_binds": True}))
    async with engine.connect() as conn:
        plan = (await conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"))).scalar()
    return _scanned(json.loads(plan) if isinstance(plan, str) else plan)


async def test_an_accounts_requests_over_a_window_read_only_its_partitions(
        pg_engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with pg_engine.begin() as conn:
        await conn.run_sync(partitions.ensure, (now - timedelta(days=20)).date(), now.date())
    day = (now - timedelta(days=10)).replace(hour=12, minute=0, second=0, microsecond=0)

    scanned = await _explain(pg_engine, day - timedelta(hours=30), day)

    expected = {partitions.partition_name((day - timedelta(days=d)).date()) for d in (0, 1)}
    assert scanned == expected
    cursor = repository.encode_cursor("request_records", (day - timedelta(hours=2)).isoformat(),
                                      "req_x")  # the second page: still those partitions only
    assert await _explain(pg_engine, day - timedelta(hours=30), day, cursor) == expected


async def test_the_writer_keeps_partitions_ahead(pg_engine: AsyncEngine, metrics: Metrics,
                                                 make_writer: WriterFactory) -> None:
    today = partitions.today()
    async with pg_engine.begin() as conn:  # as if the migration ran a week ago
        for day in (today + timedelta(days=i) for i in range(1, partitions.AHEAD_DAYS + 1)):
            await conn.execute(text(f"DROP TABLE {partitions.partition_name(day)}"))
        assert await conn.run_sync(partitions.days_ahead) == 0  # today's only

    writer = make_writer(pg_engine, replay_interval_s=0.05)
    await writer.start()
    writer.submit(record("live"))
    await writer.flush()

    async def ready() -> bool:
        async with pg_engine.connect() as conn:
            days = await conn.run_sync(partitions.days)
        return today + timedelta(days=partitions.AHEAD_DAYS) in days

    await wait_until_async(ready, what="the writer created the week ahead's partitions")
    gauge = "gateway_request_log_partitions_ahead_days"
    await wait_until_async(  # what the GatewayRequestLogPartitionsRunningOut alert reads
        lambda: _equals(metrics.registry.get_sample_value(gauge), partitions.AHEAD_DAYS))
    assert len(await stored_ids(pg_engine)) == 1  # written meanwhile (today had its partition)


async def test_the_daily_retention_command_also_prepares_the_week_ahead(
        pg_url: str, pg_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``gateway retention`` (the CronJob in deploy/k8s) keeps partitions ahead even where no
    writer has run for a day."""
    last = partitions.today() + timedelta(days=partitions.AHEAD_DAYS)
    async with pg_engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE {partitions.partition_name(last)}"))
    monkeypatch.setenv("GATEWAY_DATABASE_URL", pg_url)

    assert await asyncio.to_thread(cli.main, ["retention", "--days", "30"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report == {"deleted": 0, "partitions_created": [last.isoformat()]}
