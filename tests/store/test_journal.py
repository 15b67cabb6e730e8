"""A worker killed with records still in memory loses none: the journal holds them, and the
next writer to start replays them; a writer that lives deletes its journal as records settle."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.journal import JOURNAL_GLOB, Journal
from tests.store.conftest import WriterFactory
from tests.store.helpers import record, stored_ids

CHILD = textwrap.dedent("""
    import asyncio, os, sys, time
    from prometheus_client import CollectorRegistry
    from gateway.metrics import Metrics
    from gateway.records import RequestRecord, utcnow
    from gateway.store.db import create_engine
    from gateway.store.writer import RequestLogWriter

    async def main() -> None:
        engine = create_engine(sys.argv[1])
        writer = RequestLogWriter(engine, metrics=Metrics(CollectorRegistry()),
                                  spill_dir=sys.argv[2], flush_interval_s=3600, batch_size=10_000)
        await writer.start()
        for i in range(5):
            writer.submit(RequestRecord(request_id=f"req_killed_{i}", account_id="acct-1",
                                        key_id="key-1", route="/v1/chat/completions",
                                        method="POST", status_code=200, created_at=utcnow()))
        print("submitted", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


async def test_records_of_a_killed_worker_are_replayed_by_the_next_writer(
        tmp_path: Path, engine: AsyncEngine, db_url: str, make_writer: WriterFactory) -> None:
    spill = tmp_path / "spill"
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, db_url, str(spill),
                                                 stdout=asyncio.subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert (await child.stdout.readline()).strip() == b"submitted"
    finally:
        os.kill(child.pid, signal.SIGKILL)  # the batch was still filling: nothing written
        await child.wait()
    assert await stored_ids(engine) == []
    assert list(spill.glob(JOURNAL_GLOB))

    writer = make_writer(engine, spill_dir=spill)
    await writer.start()  # its first replay round adopts the dead writer's journal
    await writer.replay_spill()

    assert sorted(await stored_ids(engine)) == [f"req_killed_{i}" for i in range(5)]
    assert not list(spill.glob(JOURNAL_GLOB))


async def test_a_living_writer_deletes_its_journal_as_records_settle(
        tmp_path: Path, engine: AsyncEngine, make_writer: WriterFactory) -> None:
    spill = tmp_path / "spill"
    writer = make_writer(engine, spill_dir=spill)
    writer._journal.seal_after_s = 0.0  # seal at every step, so deletion is observable
    await writer.start()
    for _ in range(3):
        writer.submit(record("settled"))
        await writer.flush()
        await writer.replay_spill()  # a progress step after the flush

    assert len(await stored_ids(engine)) == 3
    assert len(list(spill.glob(JOURNAL_GLOB))) <= 1  # at most the active segment
    await writer.stop()
    assert not list(spill.glob(JOURNAL_GLOB))


def test_a_living_writers_journal_is_never_adopted(tmp_path: Path) -> None:
    alive, other = Journal(tmp_path), Journal(tmp_path)
    alive.append(record("alive"))

    assert other.adopt_orphans() == 0
    assert len(list(tmp_path.glob(JOURNAL_GLOB))) == 1
    alive.close(settled_all=False)  # as if it died: unlocked, left behind
    assert other.adopt_orphans() == 1
    assert len(list(tmp_path.glob("spill-*.jsonl"))) == 1
    assert (os.stat(next(tmp_path.glob("spill-*.jsonl"))).st_mode & 0o777) == 0o600
