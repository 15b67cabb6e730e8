"""Daily range partitions of the request log on PostgreSQL.

``request_records`` is the one table that grows with traffic (hundreds of millions of rows a
month at a large provider). On PostgreSQL it is range-partitioned on ``created_at``, one
partition per UTC day (``request_records_pYYYYMMDD``), so that

* retention drops whole days (``DROP TABLE``: no row-by-row delete, no bloat, no vacuum debt);
* an admin query over a time window reads only that window's partitions (partition pruning),
  each through its own ``(account_id, created_at)`` index;
* inserts go to a small, hot, recent partition.

Partitions are created ahead (:data:`AHEAD_DAYS`) by ``gateway migrate`` and by the request-log
writer (:func:`ensure_ahead`, at start-up and then hourly). A ``DEFAULT`` partition takes any
record whose day has no partition (clock skew; a writer down for longer than the horizon; a
record from the far past replayed from a spill file): the writer never refuses a record for
want of a partition. Creating a day that the default partition already holds rows for moves
those rows into the new partition in the same transaction, so nothing is lost or duplicated.

Every function takes a synchronous :class:`~sqlalchemy.engine.Connection` inside the caller's
transaction (Alembic's, or ``AsyncConnection.run_sync``), and serialises on one advisory lock:
replicas that maintain partitions at the same moment wait for each other instead of racing on
the catalog. SQLite (the local mode) keeps one plain table; nothing here runs there.

The SQL is built with f-strings (``noqa: S608``): DDL takes no bind parameters, and every name
and bound is a constant of this module or derived from a ``date``, never from input.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

TABLE: Final = "request_records"
DEFAULT_PARTITION: Final = f"{TABLE}_default"
AHEAD_DAYS: Final = 7
"""Days of partitions kept ready beyond today: a week of writer downtime before records land
in the default partition."""
_LOCK_KEY: Final = 0x6777_7265_7170  # "gwreqp": one advisory lock for partition maintenance
_DAY_NAME: Final = re.compile(rf"^{TABLE}_p(\d{{8}})$")


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    """The day a partition named by :func:`partition_name` holds; None for any other name."""
    match = _DAY_NAME.match(name)
    return datetime.strptime(match.group(1), "%Y%m%d").date() if match else None


def is_partition(name: str) -> bool:
    """Whether ``name`` is one of the request log's partitions (a day, or the default one):
    tables that the models do not declare, made and dropped here, not by migrations."""
    return name == DEFAULT_PARTITION or day_of(name) is not None


def include_name(name: str | None, kind: str, parents: MutableMapping[Any, str | None]) -> bool:
    """Alembic's ``include_name``: autogenerate compares the models' tables, not partitions
    (nor the indexes PostgreSQL puts on each partition)."""
    table = name if kind == "table" else parents.get("table_name")
    return not (table is not None and is_partition(table))


def _bound(day: date) -> str:
    """A timestamptz literal for midnight UTC of ``day`` (built from a date: nothing to quote)."""
    return f"'{day.isoformat()} 00:00:00+00'"


def is_partitioned(conn: Connection) -> bool:
    return bool(conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = "  # noqa: S608
        f"to_regclass('{TABLE}'))")).scalar())


def partitions(conn: Connection) -> list[str]:
    """Names of the request log's partitions (the default one included)."""
    rows = conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "  # noqa: S608
        f"WHERE i.inhparent = to_regclass('{TABLE}') ORDER BY c.relname"))
    return [str(name) for name in rows.scalars()]


def days(conn: Connection) -> list[date]:
    return sorted(d for d in map(day_of, partitions(conn)) if d is not None)


def _lock(conn: Connection) -> None:
    conn.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})"))


def _create_day(conn: Connection, day: date) -> None:
    name, lo, hi = partition_name(day), _bound(day), _bound(day + timedelta(days=1))
    held = conn.execute(text(
        f"SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} "  # noqa: S608
        f"WHERE created_at >= {lo} AND created_at < {hi})")).scalar()
    if not held:
        conn.execute(text(f"CREATE TABLE {name} PARTITION OF {TABLE} "
                          f"FOR VALUES FROM ({lo}) TO ({hi})"))
        return
    # The default partition holds rows of this day: attaching would fail its constraint check.
    # Build the day as a plain table, move the rows, then attach — one transaction.
    conn.execute(text(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS)"))
    conn.execute(text(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE created_at >= {lo} "  # noqa: S608
        f"AND created_at < {hi} RETURNING *) INSERT INTO {name} SELECT * FROM moved"))
    conn.execute(text(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} "
                      f"FOR VALUES FROM ({lo}) TO ({hi})"))


def ensure(conn: Connection, first: date, last: date) -> list[date]:
    """Creates the missing daily partitions from ``first`` to ``last`` (inclusive); returns the
    days created."""
    _lock(conn)
    have = set(days(conn))
    made = []
    day = first
    while day <= last:
        if day not in have:
            _create_day(conn, day)
            made.append(day)
        day += timedelta(days=1)
    return made


def today() -> date:
    return datetime.now(UTC).date()


def ensure_ahead(conn: Connection, ahead: int = AHEAD_DAYS) -> list[date]:
    """Today's partition and the next ``ahead`` days'. A no-op on an unpartitioned table (a
    database not yet migrated to partitioning)."""
    if not is_partitioned(conn):
        return []
    now = today()
    return ensure(conn, now, now + timedelta(days=ahead))


async def prepare(engine: AsyncEngine, ahead: int = AHEAD_DAYS) -> list[date]:
    """:func:`ensure_ahead` in a transaction of its own, for async callers (the writer, ``gateway
    retention``); nothing on SQLite."""
    if engine.dialect.name != "postgresql":
        return []
    async with engine.begin() as conn:
        return await conn.run_sync(ensure_ahead, ahead)


async def ready_days(engine: AsyncEngine) -> int | None:
    """:func:`days_ahead` for async callers; None on SQLite."""
    if engine.dialect.name != "postgresql":
        return None
    async with engine.connect() as conn:
        return await conn.run_sync(days_ahead)


def days_ahead(conn: Connection) -> int | None:
    """How many days beyond today have a partition, counting on from today's (-1 when today
    has none: its records go to the default partition); None on an unpartitioned table."""
    if not is_partitioned(conn):
        return None
    ready, day, ahead = set(days(conn)), today(), -1
    while day in ready:
        day, ahead = day + timedelta(days=1), ahead + 1
    return ahead


def drop_before(conn: Connection, cutoff: datetime) -> tuple[list[date], int]:
    """Drops every daily partition whose whole day lies before ``cutoff``; returns the days
    dropped and how many records they held (counted first: retention reports what went)."""
    _lock(conn)
    doomed = [d for d in days(conn)
              if datetime.combine(d + timedelta(days=1), datetime.min.time(), UTC) <= cutoff]
    rows = 0
    for day in doomed:
        name = partition_name(day)
        rows += int(conn.execute(text(f"SELECT count(*) FROM {name}")).scalar() or 0)  # noqa: S608
        conn.execute(text(f"DROP TABLE {name}"))
    return doomed, rows
