"""Request records made to fit the ``request_records`` columns, whatever a client put in them.

The proxy copies client-supplied values (``max_tokens``, ``model``, the prompt, ...) into a
:class:`~gateway.records.RequestRecord`. Values no column can hold — integers beyond the
column's range, NUL characters (PostgreSQL text cannot contain them), lone surrogates (not
encodable as UTF-8, by the driver or the spill file), ``nan``/``inf`` — would make the database
refuse the row, and with it the batch. The edge refuses such values too; this is the writer's
own defence, so that no single request can wedge or erase the request log.

Every value is made to fit its column by the column's SQLAlchemy type (read once from the
model), so a schema change cannot leave a column unguarded. Cleaning is idempotent. A value of
the wrong type altogether becomes ``None``, or the column's default where it is NOT NULL and
has one; a missing value in a NOT NULL column without a default (``route``, say) is left for
the database to refuse, and the writer then quarantines that one row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    SmallInteger,
    String,
)

from gateway.records import RECORD_FIELDS, RequestRecord
from gateway.store.models import RequestRow

Cleaner = Callable[[Any], Any]

INT16 = (-(2**15), 2**15 - 1)
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


def clean_text(value: Any, length: int | None = None) -> str | None:
    """Valid UTF-8 without NUL, at most ``length`` characters. Numbers become their text."""
    if isinstance(value, bool | int | float):
        try:
            value = str(value)
        except ValueError:  # an integer of more than 4300 digits
            return None
    if not isinstance(value, str):
        return None
    text: str = value.replace("\x00", "") if "\x00" in value else value
    if not text.isascii():
        text = _without_lone_surrogates(text)
    return text[:length] if length is not None else text


def _without_lone_surrogates(value: str) -> str:
    """Lone surrogates become U+FFFD; a pair written as two code points becomes its character."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def clean_int(value: Any, bounds: tuple[int, int] = INT32) -> int | None:
    """An integer clamped into ``bounds``; a finite float is truncated, anything else is None."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value)
    if not isinstance(value, int):
        return None
    low, high = bounds
    return min(max(int(value), low), high)


def clean_float(value: Any) -> float | None:
    """A finite float, or None (``nan``, ``inf``, an integer beyond a double, not a number)."""
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def clean_bool(value: Any) -> bool | None:
    """A bool; 0 and 1 are accepted as such, anything else is None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    return None


def clean_datetime(value: Any) -> datetime | None:
    """An aware datetime in UTC (naive ones are taken as UTC: SQLite drops the zone)."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _cleaner(column: ColumnElement[Any]) -> Cleaner | None:
    """The cleaner for a column's type (the order matters: BigInteger is an Integer)."""
    kind = column.type
    if isinstance(kind, Boolean):
        return clean_bool
    if isinstance(kind, BigInteger):
        return lambda value: clean_int(value, INT64)
    if isinstance(kind, SmallInteger):
        return lambda value: clean_int(value, INT16)
    if isinstance(kind, Integer):
        return clean_int
    if isinstance(kind, Float):
        return clean_float
    if isinstance(kind, String):
        length = kind.length
        return lambda value: clean_text(value, length)
    if isinstance(kind, DateTime):
        return clean_datetime
    return None


def _with_default(cleaner: Cleaner, default: Any) -> Cleaner:
    """For a NOT NULL column with a default: a value of the wrong type becomes the default."""

    def clean(value: Any) -> Any:
        cleaned = cleaner(value)
        return default if cleaned is None else cleaned

    return clean


def _cleaners() -> dict[str, Cleaner]:
    cleaners: dict[str, Cleaner] = {}
    for column in RequestRow.__table__.columns:
        cleaner = _cleaner(column)
        if cleaner is None:
            raise TypeError(f"request_records.{column.name}: no sanitiser for {column.type!r}")
        default = getattr(column, "default", None)
        if not column.nullable and default is not None and default.is_scalar:
            cleaner = _with_default(cleaner, default.arg)
        cleaners[column.name] = cleaner
    return cleaners


_CLEANERS = _cleaners()


def sanitize_row(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``row`` whose every value fits its ``request_records`` column (or is None)."""
    return {name: _clean(name, value) for name, value in row.items()}


def _clean(name: str, value: Any) -> Any:
    cleaner = _CLEANERS.get(name)
    return value if value is None or cleaner is None else cleaner(value)


# --- the per-record fast path ------------------------------------------------------------------
# ``sanitize_record`` runs once per request. Almost every value already fits its column, and
# telling so takes one type test and a comparison; the cleaners (a call or two each) run only for
# values that fail it. Whatever passes the test is exactly what its cleaner would return.

_TEXT, _INT, _FLOAT, _BOOL, _DATETIME = range(5)
_Check = tuple[str, int, Any, Cleaner | None]


def _fits_check(column: ColumnElement[Any]) -> tuple[int, Any]:
    """The fast test's kind and argument for a column (same type order as ``_cleaner``)."""
    kind = column.type
    if isinstance(kind, Boolean):
        return _BOOL, None
    if isinstance(kind, BigInteger):
        return _INT, INT64
    if isinstance(kind, SmallInteger):
        return _INT, INT16
    if isinstance(kind, Integer):
        return _INT, INT32
    if isinstance(kind, Float):
        return _FLOAT, None
    if isinstance(kind, String):
        return _TEXT, kind.length
    return _DATETIME, None


def _checks() -> tuple[_Check, ...]:
    columns = RequestRow.__table__.columns
    return tuple(
        (name, *_fits_check(columns[name]), _CLEANERS[name]) if name in _CLEANERS
        else (name, -1, None, None)
        for name in RECORD_FIELDS
    )


_CHECKS = _checks()


def sanitize_record(record: RequestRecord) -> RequestRecord:
    """A copy of ``record`` whose every value fits its column (see the module docstring);
    the same as cleaning ``record.to_row()`` with ``sanitize_row``, only cheaper."""
    values: list[Any] = []
    for name, kind, arg, cleaner in _CHECKS:
        value = getattr(record, name)
        if value is None or cleaner is None:
            pass
        elif kind == _TEXT:
            if not (type(value) is str and value.isascii() and "\x00" not in value
                    and (arg is None or len(value) <= arg)):
                value = cleaner(value)
        elif kind == _INT:
            if not (type(value) is int and arg[0] <= value <= arg[1]):
                value = cleaner(value)
        elif kind == _FLOAT:
            if not (type(value) is float and math.isfinite(value)):
                value = cleaner(value)
        elif kind == _BOOL:
            if type(value) is not bool:
                value = cleaner(value)
        elif not (type(value) is datetime and value.tzinfo is UTC):
            value = cleaner(value)
        values.append(value)
    return RequestRecord(*values)
