"""Alembic environment for the gateway schema: PostgreSQL (asyncpg) and SQLite (aiosqlite).

Normally run through ``gateway.store.migrate``, which builds the Config in code (no
alembic.ini). The database URL comes from ``config.attributes["database_url"]`` (not the
``sqlalchemy.url`` option, because ConfigParser would interpolate ``%`` in passwords), falling
back to ``sqlalchemy.url`` for hand-made configs. A caller that already holds a synchronous
Connection may pass it as ``config.attributes["connection"]``.

Online migrations call ``asyncio.run``, so this must not run inside a running event loop.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.store import partitions
from gateway.store.models import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set config.attributes['database_url']")
    return str(url)


def _run_on(connection: Connection) -> None:
    # SQLite cannot ALTER most things; batch mode rebuilds tables for later revisions.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=partitions.include_name,
    )
    with context.begin_transaction():
        context.run_migrations()
        if connection.dialect.name == "postgresql":
            # Every upgrade (even at head) keeps the request log's daily partitions a week
            # ahead, so `gateway migrate` from a daily job is enough where no writer runs.
            partitions.ensure_ahead(connection)


async def _run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    url = _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
elif isinstance(given := config.attributes.get("connection"), Connection):
    _run_on(given)
else:
    asyncio.run(_run_async(_database_url()))
