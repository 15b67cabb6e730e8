"""The request-log writer: batched writes, spill on overflow or outage, idempotent replay."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.metrics import Metrics
from gateway.store.db import create_engine
from gateway.store.models import RequestRow
from gateway.store.spill import SpillDir
from tests.store.conftest import WriterFactory
from tests.store.helpers import (
    metric,
    quarantined,
    record,
    row_count,
    spill_files,
    stored_ids,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until_async

SPILLED = "gateway_request_log_spilled_total"
REPLAYED = "gateway_request_log_replayed_total"
WRITTEN = "gateway_request_log_written_total"
WRITE_ERRORS = "gateway_request_log_write_errors_total"
QUEUE_DEPTH = "gateway_request_log_queue_depth"
SPILL_PENDING = "gateway_request_log_spill_pending_bytes"
NEVER = 3600.0  # a replay interval that keeps the background replay loop out of the test


def _pg_host_port(url: str) -> tuple[str, int]:
    host, port = url.split("@", 1)[1].split("/", 1)[0].split(":")
    return host, int(port)


async def test_submitted_records_reach_the_database(
    engine: AsyncEngine, make_writer: WriterFactory, metrics: Metrics
) -> None:
    writer = make_writer(engine, batch_size=100, replay_interval_s=NEVER)
    await writer.start()
    written_before = metric(metrics, WRITTEN)
    records = [record(prompt_text="héllo", logprobs=True, top_logprobs=5) for _ in range(450)]
    for item in records:
        writer.submit(item)

    await writer.flush()

    assert sorted(await stored_ids(engine)) == sorted(r.request_id for r in records)
    assert metric(metrics, WRITTEN) - written_before == 450
    assert metric(metrics, QUEUE_DEPTH) == 0
    assert writer.database_healthy
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(RequestRow).where(RequestRow.request_id == records[0].request_id)
            )
        ).one()
    assert (row.prompt_text, row.logprobs, row.top_logprobs) == ("héllo", True, 5)
    assert row.created_at.replace(tzinfo=None) == records[0].created_at.replace(tzinfo=None)


async def test_stop_writes_out_everything_queued(
    engine: AsyncEngine, make_writer: WriterFactory, tmp_path: Path
) -> None:
    writer = make_writer(engine, flush_interval_s=5.0, replay_interval_s=NEVER)
    await writer.start()
    records = [record() for _ in range(50)]
    for item in records:
        writer.submit(item)

    await writer.stop()

    assert sorted(await stored_ids(engine)) == sorted(r.request_id for r in records)
    assert spill_files(tmp_path / "spill") == []


async def test_queue_overflow_spills_and_is_replayed(
    engine: AsyncEngine, make_writer: WriterFactory, metrics: Metrics, tmp_path: Path
) -> None:
    writer = make_writer(engine, queue_max=10, replay_interval_s=NEVER)
    await writer.start()
    spilled_before, replayed_before = metric(metrics, SPILLED), metric(metrics, REPLAYED)
    records = [record() for _ in range(200)]
    for item in records:  # no await in between: the write loop cannot drain the queue
        writer.submit(item)

    await writer.flush()

    assert metric(metrics, SPILLED) - spilled_before == 190
    # The start-up replay round may be running now; replay_spill waits for it, then sweeps.
    await writer.replay_spill()

    assert sorted(await stored_ids(engine)) == sorted(r.request_id for r in records)
    assert metric(metrics, REPLAYED) - replayed_before == 190
    assert writer.spill_pending_bytes() == 0
    assert metric(metrics, SPILL_PENDING) == 0
    assert spill_files(tmp_path / "spill") == []


async def test_replaying_known_records_does_not_duplicate_them(
    engine: AsyncEngine, make_writer: WriterFactory, tmp_path: Path
) -> None:
    first = make_writer(engine, replay_interval_s=NEVER)
    await first.start()
    known = [record() for _ in range(20)]
    for item in known:
        first.submit(item)
    await first.stop()
    assert await row_count(engine) == 20
    # the same records (say, a commit whose acknowledgement was lost) plus new ones, spilled
    fresh = [record() for _ in range(5)]
    old_process = SpillDir(tmp_path / "spill")
    old_process.append(known + fresh)
    old_process.close()

    second = make_writer(engine, replay_interval_s=NEVER)
    assert await second.replay_spill() == 25

    assert sorted(await stored_ids(engine)) == sorted(r.request_id for r in known + fresh)
    assert spill_files(tmp_path / "spill") == []
    assert quarantined(tmp_path / "spill") == []  # not refused: ignored
    assert second.database_healthy


async def test_restart_replays_spill_files_left_by_an_earlier_run(
    pg_url: str, pg_engine: AsyncEngine, make_writer: WriterFactory, tmp_path: Path
) -> None:
    async with TcpProxy(*_pg_host_port(pg_url)) as proxy:
        proxy.cut()  # the database is unreachable for the whole first run
        down_engine = create_engine(proxy.rewrite_url(pg_url))
        try:
            first = make_writer(down_engine, replay_interval_s=NEVER)
            await first.start()
            records = [record() for _ in range(30)]
            for item in records:
                first.submit(item)
            await first.stop()
            assert not first.database_healthy
        finally:
            await down_engine.dispose()
    assert spill_files(tmp_path / "spill") != []
    assert await row_count(pg_engine) == 0

    second = make_writer(pg_engine)
    await second.start()  # replays at once, in the background

    async def all_in() -> bool:
        return await row_count(pg_engine) == 30

    await wait_until_async(all_in, timeout=30, what="leftover spill replayed on start")
    assert sorted(await stored_ids(pg_engine)) == sorted(r.request_id for r in records)
    await wait_until_async(
        lambda: asyncio.sleep(0, not spill_files(tmp_path / "spill")), timeout=30,
        what="spill file deleted",
    )


async def test_a_spill_file_being_appended_to_is_not_replayed(
    engine: AsyncEngine, make_writer: WriterFactory, tmp_path: Path
) -> None:
    other_process = SpillDir(tmp_path / "spill")  # flock is per open file: a separate holder
    records = [record() for _ in range(30)]
    other_process.append(records)  # its active file: locked
    writer = make_writer(engine, replay_interval_s=NEVER)

    assert await writer.replay_spill() == 0
    assert await row_count(engine) == 0
    assert len(spill_files(tmp_path / "spill")) == 1

    other_process.rotate()  # unlocked: now it is anyone's to replay
    assert await writer.replay_spill() == 30
    assert await row_count(engine) == 30
    assert spill_files(tmp_path / "spill") == []


async def test_torn_last_line_is_set_aside_and_the_rest_replayed(
    engine: AsyncEngine, make_writer: WriterFactory, tmp_path: Path
) -> None:
    records = [record() for _ in range(10)]
    crashed = SpillDir(tmp_path / "spill")
    crashed.append(records)
    crashed.close()
    (path,) = spill_files(tmp_path / "spill")
    with path.open("ab") as sink:  # a crash in the middle of an append
        sink.write(orjson.dumps(record().to_json_dict())[:40])
    writer = make_writer(engine, replay_interval_s=NEVER)

    assert await writer.replay_spill() == 10

    assert await row_count(engine) == 10
    assert spill_files(tmp_path / "spill") == []
    (torn,) = quarantined(tmp_path / "spill")  # set aside verbatim, never replayed
    assert (torn["reason"], torn["request_id"]) == ("UnreadableLine", None)


async def test_a_refused_record_does_not_keep_its_batch_out(
    engine: AsyncEngine, make_writer: WriterFactory, tmp_path: Path
) -> None:
    writer = make_writer(engine, replay_interval_s=NEVER)
    await writer.start()
    good = [record(model="m" * 500) for _ in range(9)]  # over-long: cut to the column
    bad = record()
    bad.route = None  # type: ignore[assignment]  # NOT NULL violation
    for item in [*good[:4], bad, *good[4:]]:
        writer.submit(item)

    await writer.flush()

    assert sorted(await stored_ids(engine)) == sorted(r.request_id for r in good)
    assert writer.database_healthy
    assert spill_files(tmp_path / "spill") == []
    assert [e["request_id"] for e in quarantined(tmp_path / "spill")] == [bad.request_id]
    async with engine.connect() as conn:
        models = set((await conn.execute(select(RequestRow.model))).scalars())
    assert models == {"m" * 200}


async def test_flush_before_start_is_refused(
    engine: AsyncEngine, make_writer: WriterFactory
) -> None:
    writer = make_writer(engine)
    with pytest.raises(RuntimeError):
        await writer.flush()


async def test_records_submitted_after_stop_are_spilled(
    pg_engine: AsyncEngine, make_writer: WriterFactory, tmp_path: Path
) -> None:
    writer = make_writer(pg_engine, replay_interval_s=NEVER)
    await writer.start()
    await writer.stop()
    late = record()
    writer.submit(late)

    assert late.request_id.encode() in b"".join(
        p.read_bytes() for p in spill_files(tmp_path / "spill")
    )
    replayer = make_writer(pg_engine, replay_interval_s=NEVER)
    assert await replayer.replay_spill() == 1
    assert await stored_ids(pg_engine) == [late.request_id]


async def _batches_written(writer: object, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the batches the write loop hands to ``_store``, in order."""
    sizes: list[int] = []
    store = writer._store  # type: ignore[attr-defined]

    async def counting(records: list[object]) -> None:
        sizes.append(len(records))
        await store(records)

    monkeypatch.setattr(writer, "_store", counting)
    return sizes


async def test_a_full_batch_is_written_without_waiting_out_the_flush_interval(
    engine: AsyncEngine, make_writer: WriterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = make_writer(engine, batch_size=20, flush_interval_s=30.0, replay_interval_s=NEVER)
    sizes = await _batches_written(writer, monkeypatch)
    await writer.start()
    records = [record() for _ in range(20)]
    writer.submit(records[0])
    await asyncio.sleep(0.05)  # the write loop now lingers for the batch to fill
    for item in records[1:]:
        writer.submit(item)

    async def one_batch() -> bool:
        return len(sizes) == 1

    await wait_until_async(one_batch, timeout=5)

    assert sizes == [20]
    assert sorted(await stored_ids(engine)) == sorted(r.request_id for r in records)


async def test_records_trickling_in_while_a_batch_lingers_join_that_batch(
    engine: AsyncEngine, make_writer: WriterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = make_writer(engine, batch_size=100, flush_interval_s=0.3, replay_interval_s=NEVER)
    sizes = await _batches_written(writer, monkeypatch)
    await writer.start()
    for _ in range(10):
        writer.submit(record())
        await asyncio.sleep(0.005)

    async def all_written() -> bool:
        return sum(sizes) == 10

    await wait_until_async(all_written, timeout=5)

    assert sizes == [10]


async def test_flush_and_stop_end_a_lingering_batch_at_once(
    engine: AsyncEngine, make_writer: WriterFactory
) -> None:
    writer = make_writer(engine, batch_size=1000, flush_interval_s=60.0, replay_interval_s=NEVER)
    await writer.start()
    first, second = record(), record()
    writer.submit(first)
    await asyncio.sleep(0.05)  # lingering: at most 60 s, unless woken

    async with asyncio.timeout(10):
        await writer.flush()
    assert await stored_ids(engine) == [first.request_id]

    writer.submit(second)
    await asyncio.sleep(0.05)
    async with asyncio.timeout(10):
        await writer.stop()
    assert sorted(await stored_ids(engine)) == sorted([first.request_id, second.request_id])
