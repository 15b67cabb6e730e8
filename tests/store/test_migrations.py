"""The packaged Alembic migrations build exactly the models' schema, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from gateway.store import migrate
from gateway.store.db import create_engine
from gateway.store.models import Base
from gateway.store.partitions import include_name, is_partition

HEAD = "0005"
TABLES = {
    "accounts", "api_keys", "request_records", "enforcement_actions", "audit_log", "flags",
    "flag_accounts",
}


def _schema_of(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    return {
        "diff": compare_metadata(MigrationContext.configure(
            connection, opts={"include_name": include_name}), Base.metadata),
        "tables": {t for t in inspector.get_table_names() if not is_partition(t)}
        - {"alembic_version"},
        "indexes": {
            index["name"]
            for table in inspector.get_table_names()
            for index in inspector.get_indexes(table)
        },
        "fks": {
            (table, fk["referred_table"])
            for table in inspector.get_table_names()
            for fk in inspector.get_foreign_keys(table)
        },
    }


async def _schema(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_schema_of)
    finally:
        await engine.dispose()


def _assert_matches_models(schema: dict[str, Any]) -> None:
    assert schema["diff"] == []
    assert schema["tables"] == TABLES
    expected_indexes = {
        index.name for table in Base.metadata.tables.values() for index in table.indexes
    }
    assert expected_indexes <= schema["indexes"]
    assert schema["fks"] == {
        ("api_keys", "accounts"), ("enforcement_actions", "accounts"), ("flags", "accounts"),
        ("flag_accounts", "flags"), ("flag_accounts", "accounts"),
    }


async def test_postgres_upgrade_head_matches_models(fresh_postgres_url: str) -> None:
    assert await migrate.current_async(fresh_postgres_url) is None
    assert (await _schema(fresh_postgres_url))["diff"] != []  # empty DB: the check has teeth

    await migrate.upgrade_async(fresh_postgres_url)

    assert await migrate.current_async(fresh_postgres_url) == HEAD
    _assert_matches_models(await _schema(fresh_postgres_url))


async def test_postgres_downgrade_then_upgrade_again(fresh_postgres_url: str) -> None:
    await migrate.upgrade_async(fresh_postgres_url)
    config = migrate.alembic_config(fresh_postgres_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    assert (await _schema(fresh_postgres_url))["tables"] == set()
    assert await migrate.current_async(fresh_postgres_url) is None

    await migrate.upgrade_async(fresh_postgres_url)
    _assert_matches_models(await _schema(fresh_postgres_url))


def test_sqlite_upgrade_head_matches_models(tmp_path: Path) -> None:
    """Synchronous caller (no running loop): ``upgrade`` runs its own."""
    url = f"sqlite:///{tmp_path / 'gateway.db'}"  # plain URL: the async driver is filled in
    assert migrate.current(url) is None

    migrate.upgrade(url)
    migrate.upgrade(url)  # idempotent at head

    assert migrate.current(url) == HEAD
    _assert_matches_models(asyncio.run(_schema(migrate.async_url(url))))


async def test_sqlite_upgrade_from_async_code(sqlite_url: str) -> None:
    await migrate.upgrade_async(sqlite_url)
    assert await migrate.current_async(sqlite_url) == HEAD
    _assert_matches_models(await _schema(sqlite_url))


async def test_sync_upgrade_refuses_a_running_loop(sqlite_url: str) -> None:
    with pytest.raises(RuntimeError, match="upgrade_async"):
        migrate.upgrade(sqlite_url)
    with pytest.raises(RuntimeError, match="current_async"):
        migrate.current(sqlite_url)


def test_migrations_ship_inside_the_package() -> None:
    assert (migrate.MIGRATIONS_DIR / "env.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "script.py.mako").is_file()
    assert migrate.MIGRATIONS_DIR.parent == Path(migrate.__file__).resolve().parent
