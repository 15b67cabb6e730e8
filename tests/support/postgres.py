"""Throwaway databases: PostgreSQL on the real local server (127.0.0.1:5432, user postgres),
or SQLite files; empty, or migrated as production's are."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg

from gateway.store.migrate import upgrade_async

SERVER_DSN = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


async def create_database() -> str:
    """Create an empty database and return its SQLAlchemy async URL."""
    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(SERVER_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = SERVER_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(SERVER_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def migrated_database(kind: str, directory: Path) -> str:
    """A fresh database migrated to head by the packaged Alembic migrations, as production's
    is: ``kind`` ``"postgres"`` (a database of its own on the real server; drop it with
    :func:`discard_database`) or ``"sqlite"`` (a file in ``directory``)."""
    if kind == "postgres":
        url = await create_database()
    else:
        url = f"sqlite+aiosqlite:///{directory / 'gateway.db'}"
    await upgrade_async(url)
    return url


async def discard_database(url: str) -> None:
    """Drop a database from :func:`migrated_database` (a SQLite file goes with its directory)."""
    if url.startswith("postgresql"):
        await drop_database(url)
