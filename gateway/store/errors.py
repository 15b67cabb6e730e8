"""What a failed database write says about the rows in it: bad data, or no database.

The request-log writer must tell the two apart. A *data* error (a value out of range, a
character the encoding refuses, a constraint) is the rows' fault: retrying them never helps,
so the writer isolates and quarantines them and carries on. An *unavailable* error (connection
refused or lost, timeouts, too many connections, the server shutting down) is the database's:
the rows are kept (spilled) and retried. Mistaking one for the other either loses evidence or
lets one hostile row stop the log, so the verdict comes from what the error *is* — its
SQLSTATE, or the driver's exception class — never from its message.

The chain is walked from SQLAlchemy's wrapper through ``orig`` (the DB-API error) and
``__cause__`` (asyncpg's own exception, or a Python error raised while binding a value).
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterator

import asyncpg
from sqlalchemy import exc as sa_exc


class Failure(enum.Enum):
    DATA = "data"
    """The database refuses these rows; the same rows will always fail."""
    UNAVAILABLE = "unavailable"
    """The database cannot take rows now; the same rows may well succeed later."""
    UNKNOWN = "unknown"
    """Neither is evident: the writer asks the database (a probe) before deciding."""


# SQLSTATE classes: 22 data exception, 23 integrity constraint violation. Any other class (08
# connection, 53 insufficient resources, 57 operator intervention, 40 rollback, 42 a missing
# table, XX internal, ...) says the trouble is not in the row, so the rows are retried later.
_DATA_SQLSTATE_CLASSES = frozenset({"22", "23"})

# Checked in order, most specific first: the first match gives the link's verdict.
_BY_CLASS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Failure], ...] = (
    ((sa_exc.DisconnectionError, sa_exc.TimeoutError), Failure.UNAVAILABLE),
    ((sa_exc.DataError, sa_exc.IntegrityError), Failure.DATA),
    (sa_exc.OperationalError, Failure.UNAVAILABLE),
    ((sqlite3.IntegrityError, sqlite3.DataError), Failure.DATA),
    ((sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.NotSupportedError),
     Failure.UNKNOWN),  # a value SQLite cannot bind, or a closed connection
    (sqlite3.Error, Failure.UNAVAILABLE),  # locked, disk full or failing, cannot open
    (asyncpg.DataError, Failure.DATA),
    ((asyncpg.PostgresConnectionError, asyncpg.InterfaceError), Failure.UNAVAILABLE),
    ((OSError, TimeoutError, EOFError), Failure.UNAVAILABLE),  # ConnectionError is an OSError
    ((OverflowError, UnicodeError, ValueError), Failure.DATA),  # raised binding one value
)


def classify(exc: BaseException) -> Failure:
    """DATA, UNAVAILABLE or UNKNOWN for an exception raised by a database write."""
    links = list(_chain(exc))
    if any(getattr(link, "connection_invalidated", False) for link in links):
        return Failure.UNAVAILABLE
    state = sqlstate(exc)
    if state is not None:
        return Failure.DATA if state[:2] in _DATA_SQLSTATE_CLASSES else Failure.UNAVAILABLE
    for link in reversed(links):  # the root cause knows best what happened
        verdict = _by_class(link)
        if verdict is not Failure.UNKNOWN:
            return verdict
    return Failure.UNKNOWN


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE anywhere in the chain (PostgreSQL; SQLite has none)."""
    for link in _chain(exc):
        state = getattr(link, "sqlstate", None) or getattr(link, "pgcode", None)
        if isinstance(state, str) and len(state) == 5:
            return state
    return None


def describe(exc: BaseException) -> str:
    """The error's class name and SQLSTATE, e.g. ``DataError [22000]`` — never its message,
    which may quote the rejected value (prompt text) or the SQL parameters."""
    links = list(_chain(exc))
    named = next((link for link in reversed(links) if type(link).__module__ != "builtins"),
                 links[-1])
    state = sqlstate(exc)
    return f"{type(named).__name__} [{state}]" if state else type(named).__name__


def _by_class(link: BaseException) -> Failure:
    for classes, verdict in _BY_CLASS:
        if isinstance(link, classes):
            return verdict
    return Failure.UNKNOWN


def _chain(exc: BaseException, limit: int = 8) -> Iterator[BaseException]:
    """``exc``, then what it wraps: ``orig`` (SQLAlchemy), else ``__cause__``."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(seen) < limit:
        seen.add(id(link))
        yield link
        orig = getattr(link, "orig", None) if isinstance(link, sa_exc.StatementError) else None
        link = orig if isinstance(orig, BaseException) else link.__cause__
