"""What the request-log journal costs on the request path: ``RequestLogWriter.submit`` with the
write-ahead journal (:mod:`gateway.store.journal`) against the same writer with it switched off,
in one run (writers not started, so only ``submit`` itself is timed: sanitising, journaling,
queueing). Prints microseconds per record and the ratio.

    .venv/bin/python -m bench.store.submit_cost            # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.store.request_log import make_record
from gateway.metrics import Metrics
from gateway.records import RequestRecord
from gateway.store.db import create_engine
from gateway.store.writer import RequestLogWriter


def _per_record_us(journal: bool, records: list[RequestRecord], engine: AsyncEngine) -> float:
    writer = RequestLogWriter(engine, metrics=Metrics(CollectorRegistry()),
                              spill_dir=Path(tempfile.mkdtemp()), queue_max=len(records) + 1)
    if not journal:
        writer._journal_append = lambda record: None  # type: ignore[method-assign]
    started = time.perf_counter()
    for record in records:
        writer.submit(record)
    return (time.perf_counter() - started) / len(records) * 1e6


async def run(args: argparse.Namespace) -> None:
    engine = create_engine("sqlite+aiosqlite:///" + str(Path(tempfile.mkdtemp()) / "b.db"))
    records = [make_record(i) for i in range(args.records)]
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):  # interleaved: noise hits both alike
        for journal in (True, False):
            times[journal].append(_per_record_us(journal, records, engine))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"submit: {on:.1f} us/record with the journal, {off:.1f} without "
          f"({on / off:.2f}x; +{on - off:.1f} us), medians of {args.rounds} x {args.records}")
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
