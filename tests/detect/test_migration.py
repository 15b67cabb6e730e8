"""Revision 0002 builds exactly the Flag/FlagAccount models, and downgrades cleanly."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from gateway.store import migrate
from gateway.store.db import create_engine
from gateway.store.models import Base
from gateway.store.partitions import include_name


def _schema_of(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    context = MigrationContext.configure(connection, opts={"include_name": include_name})
    return {"diff": compare_metadata(context, Base.metadata),
            "tables": set(inspector.get_table_names())}


async def _schema(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_schema_of)
    finally:
        await engine.dispose()


async def test_0002_matches_models_and_downgrades(db_url: str) -> None:
    assert await migrate.current_async(db_url) == "0005"
    schema = await _schema(db_url)
    assert schema["diff"] == []
    assert {"flags", "flag_accounts"} <= schema["tables"]
    await asyncio.to_thread(command.downgrade, migrate.alembic_config(db_url), "0001")
    schema = await _schema(db_url)
    assert not {"flags", "flag_accounts"} & schema["tables"]
    assert "accounts" in schema["tables"]
