"""Shared fixtures. Storage tests use the real PostgreSQL (127.0.0.1:5432), failing if down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.store.migrate import upgrade_async
from tests.support.postgres import create_database, drop_database


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway, empty PostgreSQL database for the whole test run."""
    url = asyncio.run(create_database())
    yield url
    asyncio.run(drop_database(url))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture(params=["postgres", "sqlite"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A freshly migrated database, once on the real PostgreSQL and once on SQLite."""
    if request.param == "postgres":
        url = await create_database()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    await upgrade_async(url)
    try:
        yield url
    finally:
        if request.param == "postgres":
            await drop_database(url)
