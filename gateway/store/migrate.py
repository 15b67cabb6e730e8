"""Run the packaged Alembic migrations from code (no alembic.ini, works from an installed wheel).

``upgrade`` and ``current`` are synchronous and start their own event loop (``asyncio.run``), so
they must not be called from a thread that is running an event loop; from async code use
``upgrade_async`` / ``current_async``, which run them in a worker thread. Plain
``postgresql://`` and ``sqlite://`` URLs are accepted and given the async driver.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_ASYNC_DRIVERS = (
    ("postgresql://", "postgresql+asyncpg://"),
    ("postgres://", "postgresql+asyncpg://"),
    ("sqlite://", "sqlite+aiosqlite://"),
)


def async_url(database_url: str) -> str:
    """The URL with an async driver (asyncpg / aiosqlite) when it names none."""
    for plain, driver in _ASYNC_DRIVERS:
        if database_url.startswith(plain):
            return driver + database_url[len(plain):]
    return database_url


def alembic_config(database_url: str) -> Config:
    """An Alembic Config for the packaged migrations and this database.

    The URL travels in ``config.attributes`` rather than ``sqlalchemy.url`` so that ``%`` in a
    password is not taken for ConfigParser interpolation.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = async_url(database_url)
    return config


def _refuse_running_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{name}() runs its own event loop; from async code use {name}_async()")


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database up to ``revision``. Must not be called inside a running loop."""
    _refuse_running_loop("upgrade")
    command.upgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """``upgrade`` in a worker thread, so the caller's loop keeps running."""
    await asyncio.to_thread(upgrade, database_url, revision)


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _current(database_url: str) -> str | None:
    engine = create_async_engine(async_url(database_url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_revision_of)
    finally:
        await engine.dispose()


def current(database_url: str) -> str | None:
    """The database's revision, or None when it was never migrated. Not inside a running loop."""
    _refuse_running_loop("current")
    return asyncio.run(_current(database_url))


async def current_async(database_url: str) -> str | None:
    """``current`` for async callers (the query itself is async, no thread needed)."""
    return await _current(database_url)
