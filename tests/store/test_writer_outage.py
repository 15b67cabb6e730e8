"""The key property: the database connection is cut mid-stream and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.metrics import Metrics
from gateway.records import RequestRecord
from gateway.store.db import create_engine
from gateway.store.models import RequestRow
from tests.store.conftest import WriterFactory
from tests.store.helpers import metric, quarantined, record, spill_files
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until_async

N = 300


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[TcpProxy]:
    host, port = pg_url.split("@", 1)[1].split("/", 1)[0].split(":")
    async with TcpProxy(host, int(port)) as running:
        yield running


@pytest.fixture
async def proxied_engine(proxy: TcpProxy, pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(proxy.rewrite_url(pg_url))
    yield engine
    await engine.dispose()


async def _counts(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        total, distinct = (
            await conn.execute(
                select(func.count(), func.count(func.distinct(RequestRow.request_id)))
            )
        ).one()
    return int(total), int(distinct)


async def _all_stored(engine: AsyncEngine, records: list[RequestRecord]) -> None:
    async def done() -> bool:
        return (await _counts(engine))[0] >= len(records)

    await wait_until_async(done, timeout=30, what=f"all {len(records)} records in the database")
    async with engine.connect() as conn:
        ids = list((await conn.execute(select(RequestRow.request_id))).scalars())
    assert sorted(ids) == sorted(r.request_id for r in records)
    assert await _counts(engine) == (len(records), len(records))


async def test_cut_connection_mid_stream_loses_and_duplicates_nothing(
    proxy: TcpProxy, proxied_engine: AsyncEngine, pg_engine: AsyncEngine,
    make_writer: WriterFactory, metrics: Metrics, tmp_path: Path,
) -> None:
    writer = make_writer(
        proxied_engine, batch_size=20, flush_interval_s=0.02, replay_interval_s=0.2
    )
    await writer.start()
    spilled, replayed, errors = (
        metric(metrics, "gateway_request_log_spilled_total"),
        metric(metrics, "gateway_request_log_replayed_total"),
        metric(metrics, "gateway_request_log_write_errors_total"),
    )
    records = [record() for _ in range(N)]

    for i, item in enumerate(records):
        writer.submit(item)
        if i == N // 3:
            proxy.cut()  # mid-stream: batches in flight, acknowledged or not
        if i == 2 * N // 3:
            await writer.flush()  # everything so far is in the DB or the spill file
            assert not writer.database_healthy
            assert writer.spill_pending_bytes() > 0
            assert metric(metrics, "gateway_request_log_spill_pending_bytes") > 0
            proxy.restore()
        if i % 5 == 0:
            await asyncio.sleep(0.005)  # records arrive over time, not all at once
    await writer.flush()

    await _all_stored(pg_engine, records)
    assert metric(metrics, "gateway_request_log_spilled_total") > spilled
    assert metric(metrics, "gateway_request_log_replayed_total") > replayed
    assert metric(metrics, "gateway_request_log_write_errors_total") > errors
    await wait_until_async(
        lambda: asyncio.sleep(0, writer.database_healthy and not writer.spill_pending_bytes()),
        timeout=30, what="writer healthy again, spill replayed",
    )
    assert spill_files(tmp_path / "spill") == []
    assert quarantined(tmp_path / "spill") == []
    await writer.stop()
    assert await _counts(pg_engine) == (N, N)


async def test_writers_sharing_a_spill_dir_replay_each_record_once(
    proxy: TcpProxy, proxied_engine: AsyncEngine, pg_engine: AsyncEngine,
    make_writer: WriterFactory, tmp_path: Path,
) -> None:
    """Two writers (as two worker processes would) spill into one directory during an outage
    and then both replay it concurrently."""
    writers = [
        make_writer(proxied_engine, batch_size=10, flush_interval_s=0.02, replay_interval_s=0.05)
        for _ in range(2)
    ]
    for writer in writers:
        await writer.start()
    proxy.cut()
    records = [record() for _ in range(120)]
    for i, item in enumerate(records):
        writers[i % 2].submit(item)
        if i % 10 == 0:
            await asyncio.sleep(0.005)
    for writer in writers:
        await writer.flush()
    assert len(spill_files(tmp_path / "spill")) >= 2

    proxy.restore()

    await _all_stored(pg_engine, records)
    await wait_until_async(
        lambda: asyncio.sleep(0, not spill_files(tmp_path / "spill")), timeout=30,
        what="spill dir emptied",
    )
