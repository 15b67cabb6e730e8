"""The request-log writer on PostgreSQL: partitioned by day (head) against one plain table (0002).

Two fresh databases on the local PostgreSQL, one migrated to head (``request_records``
partitioned by day, :mod:`gateway.store.partitions`) and one to revision 0002 (the unpartitioned
table), each written by the production :class:`~gateway.store.writer.RequestLogWriter`
(batches of 500, ``INSERT ... ON CONFLICT DO NOTHING``). Per round and database, alternating:

* ``paced``: ``--rate`` records/s (default 10,000, the issue's target) submitted in 10 ms ticks
  for ``--seconds``; reports the rate achieved, and the writer's largest backlog (records
  submitted but not yet stored: it keeps up when that stays near one batch);
* ``flat-out``: ``--burst`` records submitted at once, then ``flush``: the writer's ceiling.

Then the size on disk per million records (table, indexes and TOAST; every partition summed)
from ``pg_total_relation_size`` over what was written. Records are what the gateway writes with
the default ``prompt_storage=hash``: a chat completion with token counts, timings, sampling
parameters and a SHA-256 prompt hash, spread over 2,000 accounts and over today.

    .venv/bin/python -m bench.store.request_log              # ~2 minutes
    .venv/bin/python -m bench.store.request_log --rounds 1 --seconds 5 --burst 20000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.metrics import Metrics
from gateway.records import RequestRecord, utcnow
from gateway.store.db import create_engine
from gateway.store.migrate import upgrade_async
from gateway.store.writer import RequestLogWriter
from tests.support.postgres import create_database, drop_database

SIZE_SQL = ("SELECT coalesce(sum(pg_total_relation_size(relid)), 0) "
            "FROM pg_partition_tree('request_records')")
PLAIN_SIZE_SQL = "SELECT pg_total_relation_size('request_records')"


def make_record(i: int) -> RequestRecord:
    return RequestRecord(
        request_id=f"req_{uuid.uuid4().hex}", account_id=f"acct_{i % 2000:05d}",
        key_id=f"key_{i % 2000:05d}", route="/v1/chat/completions", method="POST",
        status_code=200, model="tiny-docstrings", tier="standard", prompt_tokens=180 + i % 700,
        completion_tokens=64 + i % 900, latency_ms=412.5, upstream_latency_ms=398.25,
        ttfb_ms=None, client_addr=f"203.0.113.{i % 250}", stream=False, max_tokens=1024, n=1,
        temperature=0.7, top_p=1.0, logprobs=False, top_logprobs=None, logit_bias_size=0,
        prompt_chars=900 + i % 3000,
        prompt_hash=hashlib.sha256(str(i).encode()).hexdigest(), created_at=utcnow(),
    )


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM request_records"))).scalar()
                   or 0)


def backlog_of(writer_metrics: Metrics) -> int:
    """Records submitted and not yet stored (the writer's queue-depth gauge)."""
    value = writer_metrics.registry.get_sample_value("gateway_request_log_queue_depth")
    return int(value or 0)


async def paced(writer: RequestLogWriter, engine: AsyncEngine, rate: float, seconds: float,
                start: int, writer_metrics: Metrics) -> tuple[float, int]:
    """(records/s stored, largest backlog) submitting ``rate`` records/s for ``seconds``."""
    before = await _count(engine)
    tick, sent, backlog = 0.01, 0, 0
    began = time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        due = int(rate * elapsed)
        for i in range(start + sent, start + due):
            writer.submit(make_record(i))
        sent = due
        backlog = max(backlog, backlog_of(writer_metrics))
        await asyncio.sleep(tick)
    await writer.flush()
    took = time.perf_counter() - began
    return (await _count(engine) - before) / took, backlog


async def flat_out(writer: RequestLogWriter, engine: AsyncEngine, n: int, start: int) -> float:
    before = await _count(engine)
    records = [make_record(start + i) for i in range(n)]
    began = time.perf_counter()
    for r in records:
        writer.submit(r)
    await writer.flush()
    return (await _count(engine) - before) / (time.perf_counter() - began)


async def size_per_million(engine: AsyncEngine) -> float:
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE request_records"))
        size = int((await conn.execute(text(SIZE_SQL))).scalar() or 0) or int(
            (await conn.execute(text(PLAIN_SIZE_SQL))).scalar() or 0)
    return size / max(await _count(engine), 1) * 1e6


async def run(args: argparse.Namespace) -> None:
    dbs = {"partitioned": await create_database(), "plain": await create_database()}
    await upgrade_async(dbs["partitioned"])
    await upgrade_async(dbs["plain"], "0002")
    engines = {name: create_engine(url) for name, url in dbs.items()}
    spill = Path(tempfile.mkdtemp(prefix="bench-request-log-"))
    metrics = {name: Metrics(CollectorRegistry()) for name in dbs}
    writers = {name: RequestLogWriter(engine, metrics=metrics[name], spill_dir=spill / name,
                                      queue_max=1_000_000)
               for name, engine in engines.items()}
    results: dict[str, dict[str, list[float]]] = {n: {"paced": [], "backlog": [], "flat": []}
                                                  for n in dbs}
    try:
        for w in writers.values():
            await w.start()
        start = 0
        for r in range(args.rounds):
            order = list(dbs) if r % 2 == 0 else list(reversed(dbs))
            for name in order:
                rate, backlog = await paced(writers[name], engines[name], args.rate,
                                            args.seconds, start, metrics[name])
                start += int(args.rate * args.seconds) + 1
                flat = await flat_out(writers[name], engines[name], args.burst, start)
                start += args.burst
                for key, value in (("paced", rate), ("backlog", backlog), ("flat", flat)):
                    results[name][key].append(value)
                print(f"round {r + 1} {name:11s} paced {rate:8.0f}/s (backlog {backlog:6d})"
                      f"  flat-out {flat:8.0f}/s", flush=True)
        sizes = {name: await size_per_million(engine) for name, engine in engines.items()}
    finally:
        for w in writers.values():
            await w.stop()
        for engine in engines.values():
            await engine.dispose()
        for url in dbs.values():
            await drop_database(url)
    _report(results, sizes, args)


def _report(results: dict[str, dict[str, list[float]]], sizes: dict[str, float],
            args: argparse.Namespace) -> None:
    med: Callable[[list[float]], float] = statistics.median
    base = results["plain"]
    print(f"\nrequest log writer, {args.rounds} rounds, target {args.rate:.0f} records/s "
          f"(medians; ratios against the plain table in the same run)")
    print(f"{'table':12s} {'paced/s':>9s} {'backlog':>8s} {'flat-out/s':>11s} {'ratio':>6s}"
          f" {'MB per 1M':>10s}")
    for name, r in results.items():
        ratio = med(r["flat"]) / med(base["flat"])
        print(f"{name:12s} {med(r['paced']):9.0f} {med(r['backlog']):8.0f} "
              f"{med(r['flat']):11.0f} {ratio:5.2f}x {sizes[name] / 2**20:10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
