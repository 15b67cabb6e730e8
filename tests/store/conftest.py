"""Fixtures for storage tests: fresh, migrated databases on the real PostgreSQL and on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.metrics import Metrics
from gateway.store.db import create_engine
from gateway.store.migrate import upgrade_async
from gateway.store.writer import RequestLogWriter
from tests.support.postgres import create_database, drop_database


@pytest.fixture
async def fresh_postgres_url() -> AsyncIterator[str]:
    """An empty database of its own on the real server, dropped afterwards."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def pg_url(fresh_postgres_url: str) -> str:
    """A fresh, migrated PostgreSQL database."""
    await upgrade_async(fresh_postgres_url)
    return fresh_postgres_url


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(pg_url)
    yield eng
    await eng.dispose()


WriterFactory = Callable[..., RequestLogWriter]


@pytest.fixture
async def make_writer(tmp_path: Path, metrics: Metrics) -> AsyncIterator[WriterFactory]:
    """Builds writers (spill dir under tmp_path by default, recording into this test's
    ``metrics``) and stops them all at teardown."""
    writers: list[RequestLogWriter] = []

    def make(engine: AsyncEngine, **kwargs: Any) -> RequestLogWriter:
        kwargs.setdefault("spill_dir", tmp_path / "spill")
        writer = RequestLogWriter(engine, metrics=metrics, **kwargs)
        writers.append(writer)
        return writer

    yield make
    for writer in writers:
        await writer.stop()
