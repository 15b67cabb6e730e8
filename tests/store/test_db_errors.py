"""Database errors are told apart by what they are: the rows' fault (data) or the database's
(unavailable). Every error here is a real one, raised by the real PostgreSQL or SQLite."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.store.db import create_engine
from gateway.store.errors import Failure, classify, describe
from gateway.store.models import RequestRow
from gateway.store.writer import insert_ignoring_duplicates
from tests.store.helpers import record
from tests.support.postgres import SERVER_DSN
from tests.support.servers import free_port
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until_async

SECRET = "SECRET-PROMPT"

# Rows (unsanitised) that each database refuses: (fields, refused by PostgreSQL, by SQLite).
REFUSED: dict[str, tuple[dict[str, Any], bool, bool]] = {
    "int beyond 64 bits": ({"max_tokens": 2**64}, True, True),
    "int beyond 32 bits": ({"n": 2**40}, True, False),
    "NUL in text": ({"prompt_text": f"{SECRET}\x00"}, True, False),
    "lone surrogate": ({"prompt_text": f"{SECRET}\ud800"}, True, True),
    "string too long": ({"model": SECRET * 50}, True, False),
    "int too big for a float": ({"temperature": 10**400}, True, True),
    "NOT NULL": ({"route": None}, True, True),
}


async def _insert_error(engine: AsyncEngine, **fields: Any) -> BaseException:
    table = RequestRow.__table__
    assert isinstance(table, Table)
    row = {**record().to_row(), **fields}
    with pytest.raises(Exception) as caught:
        async with engine.begin() as conn:
            await conn.execute(insert_ignoring_duplicates(engine.dialect.name, table), [row])
    return caught.value


async def _select_error(engine: AsyncEngine, *statements: str) -> BaseException:
    with pytest.raises(Exception) as caught:
        async with engine.begin() as conn:
            for sql in statements or ("SELECT 1",):
                await conn.execute(text(sql))
    return caught.value


@pytest.mark.parametrize("case", REFUSED)
async def test_a_refused_row_is_a_data_error_whose_description_quotes_nothing(
    engine: AsyncEngine, case: str
) -> None:
    fields, on_postgres, on_sqlite = REFUSED[case]
    if not (on_postgres if engine.dialect.name == "postgresql" else on_sqlite):
        # This backend stores the value as it is: nothing to classify, and nothing refused.
        table = RequestRow.__table__
        assert isinstance(table, Table)
        async with engine.begin() as conn:
            await conn.execute(insert_ignoring_duplicates(engine.dialect.name, table),
                               [{**record().to_row(), **fields}])
        return

    error = await _insert_error(engine, **fields)

    assert classify(error) is Failure.DATA
    assert SECRET not in describe(error)
    assert "\n" not in describe(error)


async def test_postgres_descriptions_name_the_driver_error_and_sqlstate(
    pg_engine: AsyncEngine,
) -> None:
    assert describe(await _insert_error(pg_engine, model="m\x00")) == (
        "CharacterNotInRepertoireError [22021]")
    assert describe(await _insert_error(pg_engine, route=None)) == (
        "NotNullViolationError [23502]")


async def test_a_refused_connection_is_unavailable() -> None:
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres")
    try:
        assert classify(await _select_error(engine)) is Failure.UNAVAILABLE
    finally:
        await engine.dispose()


async def test_a_connection_lost_mid_session_is_unavailable(pg_url: str) -> None:
    host, port = pg_url.split("@", 1)[1].split("/", 1)[0].split(":")
    async with TcpProxy(host, int(port)) as proxy:
        engine = create_async_engine(proxy.rewrite_url(pg_url))  # no pre-ping: use the dead one
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            proxy.cut()
            assert classify(await _select_error(engine)) is Failure.UNAVAILABLE
        finally:
            await engine.dispose()


async def test_a_terminated_backend_is_unavailable(pg_url: str) -> None:
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            killer = await asyncpg.connect(SERVER_DSN)
            try:
                await killer.execute("SELECT pg_terminate_backend($1)", pid)
            finally:
                await killer.close()
            with pytest.raises(Exception) as caught:
                await conn.execute(text("SELECT 1"))
        assert classify(caught.value) is Failure.UNAVAILABLE
    finally:
        await engine.dispose()


async def test_a_statement_timeout_is_unavailable(pg_engine: AsyncEngine) -> None:
    error = await _select_error(
        pg_engine, "SET LOCAL statement_timeout = 10", "SELECT pg_sleep(5)")
    assert classify(error) is Failure.UNAVAILABLE
    assert describe(error).endswith("[57014]")


@pytest.fixture
async def role_without_connections() -> AsyncIterator[str]:
    """A login role allowed no connection at all: the server answers "too many connections"."""
    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(SERVER_DSN)
    try:
        await admin.execute(f'CREATE ROLE "{name}" LOGIN CONNECTION LIMIT 0')
        yield name
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


async def test_too_many_connections_is_unavailable(role_without_connections: str) -> None:
    url = SERVER_DSN.replace(
        "postgresql://postgres@", f"postgresql+asyncpg://{role_without_connections}@")
    engine = create_engine(url)
    try:
        error = await _select_error(engine)
    finally:
        await engine.dispose()
    assert classify(error) is Failure.UNAVAILABLE
    assert describe(error).endswith("[53300]")


async def test_a_locked_sqlite_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0})
    try:
        assert classify(await _select_error(engine, "SELECT * FROM t")) is Failure.UNAVAILABLE
    finally:
        await engine.dispose()
        holder.close()


async def test_an_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
    try:
        assert classify(await _select_error(engine)) is Failure.UNAVAILABLE
    finally:
        await engine.dispose()
        await _aiosqlite_threads_stopped()


async def _aiosqlite_threads_stopped() -> None:
    """aiosqlite stops the thread of a connection that failed to open without waiting for it;
    should the loop close first, the thread dies of "Event loop is closed" (a warning)."""

    async def stopped() -> bool:
        return not any("_connection_worker_thread" in t.name for t in threading.enumerate())

    await wait_until_async(stopped, interval=0.01, what="aiosqlite's worker thread stopped")


def test_a_value_sqlite_cannot_bind_is_left_to_a_probe() -> None:
    """``ProgrammingError`` means a bad value *or* a closed connection: only asking the
    database (the writer's probe) tells which."""
    with pytest.raises(sqlite3.ProgrammingError) as caught:
        sqlite3.connect(":memory:").execute("SELECT ?", ([1],))
    assert classify(caught.value) is Failure.UNKNOWN


def test_a_write_timeout_is_unavailable() -> None:
    assert classify(TimeoutError()) is Failure.UNAVAILABLE
    assert classify(ConnectionResetError()) is Failure.UNAVAILABLE
