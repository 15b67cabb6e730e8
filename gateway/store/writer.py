"""The durable, batched request-log writer: request records are ToS evidence and must not be lost.

A record's path: ``submit`` → write-ahead journal (``journal.py``: a worker killed while the
record waits in memory loses nothing) → bounded asyncio queue → write loop (a batch of
``batch_size``, or whatever arrived within ``flush_interval_s``) → one ``INSERT ... ON CONFLICT
DO NOTHING`` transaction. When the queue is full, or the database fails, records go to the spill
directory instead (``spill.py``), and the replay loop puts them into the database later. The
insert ignores request_ids already stored, so a record written twice (a commit whose
acknowledgement was lost, then replayed from the spill file) is stored once.

After a failed write the writer stops trying the database for new batches (they go straight to
the spill file, so a dead database costs no timeouts on the way) until the replay loop gets a
write or a probe through.

No record can stop the log (see ``sanitize.py``, ``errors.py`` and ``quarantine.py``): every
record is sanitised to fit its columns when submitted and again when replayed, so it can always
be encoded, spilled and bound. Should the database still refuse a batch *as data*, the batch is
split in halves until the refused rows stand alone; every other row is inserted, and the refused
ones are quarantined — never spilled, never replayed, and never taken for an outage. Only an
error that says the database is unavailable spills the batch and marks the database unhealthy.
A spill line that is not a record at all is quarantined too, so a poison line cannot keep the
rest of its file (or every file after it) out of the database.

Every method must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Insert

from gateway.metrics import Metrics
from gateway.records import RequestRecord
from gateway.store import partitions
from gateway.store.errors import Failure, classify, describe
from gateway.store.journal import Journal
from gateway.store.models import RequestRow
from gateway.store.quarantine import Quarantine
from gateway.store.sanitize import sanitize_record
from gateway.store.spill import ClaimedSpill, SpillDir

log = logging.getLogger(__name__)
PARTITION_CHECK_S = 3600.0
"""How often the writer makes sure the request log's daily partitions exist ahead."""

State = Literal["new", "running", "stopping", "stopped"]


def insert_ignoring_duplicates(dialect: str, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for PostgreSQL or SQLite: a record already stored
    is skipped. No conflict target is named: PostgreSQL's key is ``(request_id, created_at)``
    once the request log is partitioned (a partitioned table's keys include the partition
    column) and ``request_id`` before that migration, and a writer must work on both during a
    rolling upgrade. A record keeps its ``created_at`` through spills and replays, so a second
    write of one record conflicts under either key."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["request_id"])
    raise ValueError(f"request log writer supports postgresql and sqlite, not {dialect!r}")


@dataclass
class Settled:
    """The outcome of writing a batch: what went in, what was quarantined, what is pending."""

    written: int = 0
    refused: list[tuple[RequestRecord, str]] = field(default_factory=list)
    pending: list[RequestRecord] = field(default_factory=list)
    """Records still to be stored (spilled, or replayed again): the database is unavailable
    (``error`` says why), or the quarantine could not be written."""
    error: BaseException | None = None


class RequestLogWriter:
    """Batched, durable writer of request records (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        metrics: Metrics,
        spill_dir: Path,
        batch_size: int = 500,
        flush_interval_s: float = 0.25,
        queue_max: int = 20000,
        replay_interval_s: float = 2.0,
        write_timeout_s: float = 10.0,
    ) -> None:
        table = RequestRow.__table__
        assert isinstance(table, Table)
        self._engine = engine
        self._metrics = metrics
        self._insert = insert_ignoring_duplicates(engine.dialect.name, table)
        self._spill = SpillDir(Path(spill_dir))
        self._journal = Journal(Path(spill_dir))
        self._journal_warned = -math.inf
        self._quarantine = Quarantine(Path(spill_dir))
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._replay_interval_s = replay_interval_s
        self._write_timeout_s = write_timeout_s
        self._queue: asyncio.Queue[RequestRecord] = asyncio.Queue(maxsize=queue_max)
        self._overflow: list[RequestRecord] = []
        self._overflow_ready = asyncio.Event()
        # While a batch lingers to fill, the write loop sleeps on this event; ``submit`` sets it
        # once ``_wake_at`` records are queued (not per record: a wake-up per request cost more
        # than the rest of the hand-off), ``flush`` and ``stop`` set it to end the wait at once.
        self._batch_ready = asyncio.Event()
        self._wake_at = math.inf
        self._progress = asyncio.Condition()
        self._replay_lock = asyncio.Lock()
        # Both lanes settle records in FIFO order, so "n settled" means "the first n settled".
        self._queued_in = self._queued_done = self._overflow_in = self._overflow_done = 0
        self._flush_target = 0
        self._healthy = True
        self._state: State = "new"
        self._write_task: asyncio.Task[None] | None = None
        self._overflow_task: asyncio.Task[None] | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self._depth_reported = 0
        self._spill_reported = 0

    # -- public -----------------------------------------------------------------------------

    @property
    def database_healthy(self) -> bool:
        """Whether the last database write (or probe, after a failure) succeeded."""
        return self._healthy

    def spill_pending_bytes(self) -> int:
        """Bytes awaiting replay in the whole spill directory (all processes sharing it).

        Touches the filesystem (a directory listing); cheap enough for a readiness probe.
        """
        return self._spill.total_bytes()

    def submit(self, record: RequestRecord) -> None:
        """Accept a record. Never blocks on the database and never raises.

        Queue full → the record takes the overflow lane to the spill file. After ``stop`` the
        record is spilled synchronously (there is no loop machinery left to hand it to).
        """
        try:
            record = sanitize_record(record)
            if self._state == "stopped":
                self._spill_late(record)
                return
            self._journal_append(record)
            try:
                self._queue.put_nowait(record)
                self._queued_in += 1
                if self._queue.qsize() >= self._wake_at:
                    self._batch_ready.set()
            except asyncio.QueueFull:
                self._overflow.append(record)
                self._overflow_in += 1
                self._overflow_ready.set()
            self._report_depth()
        except Exception:
            log.exception("request log: could not accept record %s", record.request_id)

    def _journal_append(self, record: RequestRecord) -> None:
        """Into the write-ahead journal (:mod:`gateway.store.journal`) before the record waits in
        memory: a worker killed now loses nothing. A journal that cannot be written is logged,
        and the record goes on as before (the journal is a safety net, not the store)."""
        try:
            self._journal.append(record)
        except OSError as exc:  # e.g. a full disk: said once a minute, not once a request
            now = time.monotonic()
            if now - self._journal_warned >= 60.0:
                self._journal_warned = now
                log.warning("request log: journal append failed (%s)", type(exc).__name__)

    def _journal_progress(self) -> None:
        self._journal.progress((self._queued_in, self._overflow_in),
                               (self._queued_done, self._overflow_done))

    async def start(self) -> None:
        """Start the write, overflow and replay loops; the first replay round runs at once, so
        spill files left by earlier runs (any process's) go into the database."""
        if self._state != "new":
            raise RuntimeError(f"writer already {self._state}")
        self._state = "running"
        self._spawn_lanes()
        self._replay_task = asyncio.create_task(self._replay_loop(), name="request-log-replay")

    async def stop(self) -> None:
        """Write out everything queued; what the database does not take is spilled. Idempotent.

        Spill files are left for the next start (of this or another process) to replay.
        """
        if self._state == "stopped":
            return
        self._state = "stopping"
        self._batch_ready.set()
        await _cancel(self._replay_task)
        if self._write_task is None:  # never started: records may still be queued
            self._spawn_lanes()
        assert self._write_task is not None and self._overflow_task is not None
        await self._write_task
        self._move_queue_to_overflow()  # submitted while the write loop was finishing
        self._state = "stopped"  # from here on, submit() spills synchronously
        self._overflow_ready.set()
        await self._overflow_task
        await asyncio.to_thread(self._spill.close)
        self._journal.close(settled_all=True)  # everything is in the database or spilled
        await self._report_spill(final=True)
        self._report_depth()

    async def flush(self) -> None:
        """Return once every record submitted before the call is in the database or spilled."""
        if self._state == "new":
            raise RuntimeError("flush() before start(): nothing would write the records")
        queued, overflow = self._queued_in, self._overflow_in
        self._flush_target = max(self._flush_target, queued)
        self._batch_ready.set()
        async with self._progress:
            await self._progress.wait_for(
                lambda: self._queued_done >= queued and self._overflow_done >= overflow
            )

    async def replay_spill(self) -> int:
        """Replay now every spill file no other process holds; returns the records replayed.

        Files of others go first; this writer's active file is rotated and replayed only when
        they all went in, so an outage does not leave a new small file every round.
        """
        async with self._replay_lock:
            self._journal_progress()
            await asyncio.to_thread(self._journal.adopt_orphans)  # dead writers' journals
            replayed, ok = await self._replay_files()
            if ok and self._spill.active_bytes:
                await asyncio.to_thread(self._spill.rotate)
                more, ok = await self._replay_files()
                replayed += more
            if ok and not self._healthy:
                await self._probe()
            await self._report_spill()
            return replayed

    # -- lanes ------------------------------------------------------------------------------

    def _spawn_lanes(self) -> None:
        self._write_task = asyncio.create_task(self._write_loop(), name="request-log-write")
        self._overflow_task = asyncio.create_task(
            self._overflow_loop(), name="request-log-overflow"
        )

    async def _write_loop(self) -> None:
        """Batches from the queue to the database (or spill); ends once stopping and drained."""
        while True:
            batch = await self._next_batch()
            if batch:
                await self._store(batch)
                self._queued_done += len(batch)
                self._journal_progress()
                await self._notify()
            elif self._state != "running":
                return

    async def _next_batch(self) -> list[RequestRecord]:
        """Up to batch_size records; waits at most flush_interval_s for a batch to fill, and not
        at all while a flush() is waiting or the writer is stopping. [] when idle."""
        batch = self._take_nowait(self._batch_size)
        if not batch:
            if self._state != "running":
                return []
            try:
                async with asyncio.timeout(self._flush_interval_s):
                    batch.append(await self._queue.get())
            except TimeoutError:
                return []
        deadline = asyncio.get_running_loop().time() + self._flush_interval_s
        while len(batch) < self._batch_size:
            batch.extend(self._take_nowait(self._batch_size - len(batch)))
            remaining = deadline - asyncio.get_running_loop().time()
            if len(batch) >= self._batch_size or remaining <= 0 or not self._may_linger():
                break
            await self._linger(self._batch_size - len(batch), remaining)
        self._report_depth()
        return batch

    async def _linger(self, wanted: int, timeout_s: float) -> None:
        """Sleep until ``wanted`` more records are queued, a flush or stop asks, or
        ``timeout_s`` passes: one wake-up per batch, not one per record."""
        self._batch_ready.clear()
        if self._queue.qsize() >= wanted or not self._may_linger():
            return
        self._wake_at = wanted
        try:
            async with asyncio.timeout(timeout_s):
                await self._batch_ready.wait()
        except TimeoutError:
            pass
        finally:
            self._wake_at = math.inf

    def _may_linger(self) -> bool:
        return self._state == "running" and self._flush_target <= self._queued_done

    def _take_nowait(self, limit: int) -> list[RequestRecord]:
        taken: list[RequestRecord] = []
        while len(taken) < limit:
            try:
                taken.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return taken

    def _move_queue_to_overflow(self) -> None:
        leftover = self._take_nowait(self._queue.qsize())
        self._queued_done += len(leftover)
        self._overflow_in += len(leftover)
        self._overflow.extend(leftover)

    async def _overflow_loop(self) -> None:
        """Records the queue had no room for go straight to the spill file, in arrival order."""
        while True:
            await self._overflow_ready.wait()
            self._overflow_ready.clear()
            while self._overflow:
                chunk, self._overflow = self._overflow, []
                await self._spill_records(chunk)
                self._overflow_done += len(chunk)
                self._journal_progress()
                self._report_depth()
                await self._notify()
            if self._state == "stopped":
                return

    async def _replay_loop(self) -> None:
        maintained = -math.inf
        while True:
            try:
                await self.replay_spill()
            except Exception:
                log.exception("request log: replay round failed")
            if time.monotonic() - maintained >= PARTITION_CHECK_S and self._healthy:
                maintained = time.monotonic()
                await self._maintain_partitions()
            await asyncio.sleep(self._replay_interval_s)

    async def _maintain_partitions(self) -> None:
        """Keeps the request log's daily partitions ahead (PostgreSQL; see
        :mod:`gateway.store.partitions`). A failure is logged and retried next time: records
        whose day has no partition go to the default partition meanwhile, none is refused."""
        try:
            made = await partitions.prepare(self._engine)
            ahead = await partitions.ready_days(self._engine)
        except Exception as exc:
            log.warning("request log: partition maintenance failed (%s)", type(exc).__name__)
            return
        if ahead is not None:
            self._metrics.log_partitions_ahead.set(ahead)
        if made:
            log.info("request log: created %d daily partition(s) up to %s", len(made), made[-1])

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    # -- database ---------------------------------------------------------------------------

    async def _store(self, records: list[RequestRecord]) -> None:
        """Into the database if it is believed up, else (or on failure) into the spill file."""
        try:
            if self._healthy:
                records = (await self._write(records)).pending
                if not records:
                    return
            await self._spill_records(records)
        except Exception:  # a bug must not stop the write loop (flush() would hang)
            log.exception("request log: %d record(s) could not be stored", len(records))

    async def _write(self, records: Sequence[RequestRecord]) -> Settled:
        """Insert the (sanitised) records; those the database refuses as data are quarantined.
        When it is unavailable, the records not yet settled come back as ``pending`` and the
        database is marked unhealthy; a data error never does that."""
        started = time.perf_counter()
        settled = await self._settle(records)
        self._metrics.log_written.inc(settled.written)
        if settled.refused:
            await self._quarantine_refused(settled)
        if settled.error is not None:
            self._mark_unavailable(settled.error)
            return settled
        self._metrics.log_batch_duration.observe(time.perf_counter() - started)
        self._healthy = True
        return settled

    async def _settle(self, records: Sequence[RequestRecord]) -> Settled:
        """One transaction for the batch; on a data error, split it in halves until each
        refused row stands alone (a few transactions per bad row, not one per row)."""
        settled = Settled()
        parts = [list(records)] if records else []  # a stack: the earliest records on top
        while parts:
            part = parts.pop()
            try:
                await self._insert_rows([record.to_row() for record in part])
            except Exception as exc:
                if await self._is_unavailable(exc):
                    settled.pending = [*part, *itertools.chain.from_iterable(reversed(parts))]
                    settled.error = exc
                    return settled
                if len(part) == 1:
                    settled.refused.append((part[0], describe(exc)))
                else:
                    middle = len(part) // 2
                    parts += [part[middle:], part[:middle]]
                continue
            settled.written += len(part)
        return settled

    async def _insert_rows(self, rows: list[dict[str, Any]]) -> int:
        async with asyncio.timeout(self._write_timeout_s), self._engine.begin() as conn:
            await conn.execute(self._insert, rows)
        return len(rows)

    async def _is_unavailable(self, exc: BaseException) -> bool:
        """Whether a failed insert means "no database" rather than "bad rows". An error that
        says neither counts as bad rows only if the database answers a probe."""
        failure = classify(exc)
        if failure is Failure.UNKNOWN:
            log.warning("request log: unclassified database error (%s)", describe(exc))
            failure = Failure.DATA if await self._database_answers() else Failure.UNAVAILABLE
        return failure is Failure.UNAVAILABLE

    def _mark_unavailable(self, exc: BaseException) -> None:
        self._metrics.log_write_errors.inc()
        if self._healthy:
            log.warning("request log: database write failed (%s); spilling", describe(exc))
        self._healthy = False

    async def _quarantine_refused(self, settled: Settled) -> None:
        """Set the refused records aside; should the disk fail, they stay pending instead."""
        reasons = sorted({reason for _, reason in settled.refused})
        try:
            await asyncio.to_thread(self._quarantine.add_records, settled.refused)
        except OSError:
            log.exception("request log: cannot write the quarantine; records kept pending")
            settled.pending += [record for record, _ in settled.refused]
            return
        self._metrics.log_quarantined.inc(len(settled.refused))
        log.error("request log: %d record(s) refused by the database (%s), quarantined",
                  len(settled.refused), ", ".join(reasons))

    async def _quarantine_lines(self, lines: list[bytes], source: str) -> bool:
        """Set aside spill lines that are no record; False when the disk refused."""
        try:
            await asyncio.to_thread(self._quarantine.add_lines, lines, source)
        except OSError:
            log.exception("request log: cannot write the quarantine")
            return False
        self._metrics.log_quarantined.inc(len(lines))
        return True

    async def _database_answers(self) -> bool:
        try:
            async with asyncio.timeout(self._write_timeout_s), self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def _probe(self) -> None:
        """After a failure with nothing left to replay, find out whether the database is back."""
        if await self._database_answers():
            self._healthy = True

    # -- spill ------------------------------------------------------------------------------

    async def _spill_records(self, records: list[RequestRecord]) -> None:
        """Append to the spill file. Should the disk fail too, keep retrying disk and database
        (the queue fills and submit() overflows meanwhile); only at shutdown are records dropped,
        loudly."""
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(self._spill.append, records)
            except OSError:
                log.exception("request log: cannot write the spill file")
            else:
                self._metrics.log_spilled.inc(len(records))
                await self._report_spill()
                return
            if self._state != "running":
                log.error("request log: %d record(s) LOST at shutdown", len(records))
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            records = (await self._write(records)).pending
            if not records:
                return

    def _spill_late(self, record: RequestRecord) -> None:
        """A record submitted after stop(): spilled synchronously (shutdown path only), and the
        file closed at once so that it does not stay locked until the process exits."""
        self._spill.append([record])
        self._spill.rotate()
        self._metrics.log_spilled.inc()

    async def _replay_files(self) -> tuple[int, bool]:
        """Replay every claimable file; stops at the first database failure (ok=False)."""
        replayed = 0
        for path in await asyncio.to_thread(self._spill.files):
            # Synchronous on purpose: a few metadata calls, and a claim made in a thread whose
            # awaiting task is cancelled would leak a locked descriptor.
            claimed = self._spill.claim(path)
            if claimed is None:
                continue
            try:
                count, ok = await self._replay_file(claimed)
            finally:
                claimed.release()
            replayed += count
            if not ok:
                return replayed, False
        return replayed, True

    async def _replay_file(self, claimed: ClaimedSpill) -> tuple[int, bool]:
        """Chunks of one file into the database; the file is deleted only once every line is
        stored or quarantined. After a failure the whole file is replayed again later (the
        insert is idempotent; lines quarantined in that first pass are quarantined again)."""
        replayed = 0
        while chunk := await asyncio.to_thread(claimed.read_chunk, self._batch_size):
            if chunk.unreadable and not await self._quarantine_lines(
                    chunk.unreadable, claimed.path.name):
                return replayed, False
            if not chunk.records:
                continue
            settled = await self._write([sanitize_record(r) for r in chunk.records])
            if settled.pending:
                return replayed, False
            self._metrics.log_replayed.inc(settled.written)
            replayed += settled.written
        await asyncio.to_thread(claimed.delete)
        if replayed:
            log.info("request log: replayed %d record(s) from %s", replayed, claimed.path.name)
        return replayed, True

    # -- gauges -----------------------------------------------------------------------------

    def _report_depth(self) -> None:
        """The queue-depth gauge moves by deltas, so writers sharing it add up."""
        depth = 0 if self._state == "stopped" else self._queue.qsize() + len(self._overflow)
        self._metrics.log_queue_depth.inc(depth - self._depth_reported)
        self._depth_reported = depth

    async def _report_spill(self, *, final: bool = False) -> None:
        """The spill-pending gauge holds this writer's files (its own, rotated or claimed): the
        files of a stopped writer are claimed by whichever writer replays them next."""
        own = 0 if final else await asyncio.to_thread(self._spill.own_bytes)
        self._metrics.log_spill_pending.inc(own - self._spill_reported)
        self._spill_reported = own


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
