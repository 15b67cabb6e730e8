"""Engine and session factory. No I/O happens until the engine is first used.

A SQLite database file holds the request log (prompts, when stored) and hashed keys: it is made
private to the gateway's user (0600) before each connection, whether SQLite is about to create
it or it was left with a looser mode. SQLite gives its ``-wal`` and ``-shm`` files the
database file's mode, so they follow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger(__name__)
SQLITE_FILE_MODE = 0o600
_COMPANIONS = ("-wal", "-shm", "-journal")  # SQLite's side files of a database file


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so readers and the writer coexist."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "do_connect")
        def _private_file(*_: Any) -> None:
            make_sqlite_file_private(url)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=10, pool_timeout=5,
        connect_args={"timeout": 5, "command_timeout": 10},
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database or a ``file:`` URI."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def make_sqlite_file_private(url: str) -> None:
    """For a SQLite URL naming a file: create it private, or make it so (see below). Call it
    before anything else (migrations, say) may let SQLite create the file world-readable."""
    path = sqlite_file(url) if url.startswith("sqlite") else None
    if path is not None:
        make_private_file(path)


def make_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing (SQLite takes an empty file for a new
    database), else drop any group and other permission bits, and those of its companions.
    A failure is logged, not raised: SQLite then reports its own error, if any."""
    try:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE))
        for companion in (path, *(path.with_name(path.name + s) for s in _COMPANIONS)):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_IMODE(companion.stat().st_mode) & 0o077:
                    companion.chmod(SQLITE_FILE_MODE)
    except OSError as exc:
        log.warning("cannot make the SQLite database file private: %s", type(exc).__name__)
