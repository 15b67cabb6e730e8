"""Shared fixtures. Storage tests use the real PostgreSQL (127.0.0.1:5432), failing if down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

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
