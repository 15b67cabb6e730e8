"""Throwaway PostgreSQL databases on the real local server (127.0.0.1:5432, user postgres)."""

from __future__ import annotations

import os
import uuid

import asyncpg

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
