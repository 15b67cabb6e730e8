"""Every SQL query for accounts, keys, request records (reads), enforcement actions and audit.

Functions take an :class:`AsyncSession` and only ``flush``: the caller owns the transaction, so
a change and its audit entry commit (or roll back) together. Datetimes going in are normalised
to UTC; SQLite hands them back naive (UTC), :func:`as_utc` fixes that on the way out.

Lists use keyset pagination: newest first, with an opaque cursor (urlsafe base64 of JSON) that
points just past the last item returned, so walking a list visits every row exactly once even
while new rows arrive. A cursor names its list (the table) and is decoded strictly: anything
this module did not produce for that list — malformed, mistyped, out of the columns' range, or
from another list — raises :class:`InvalidCursor` before a query is built. Cursors are not
signed: a forged one can only move the caller, who may read the whole list anyway, to another
position in it, so strict decoding is all that safety needs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from gateway.domain.keys import generate_key, hash_key, key_prefix, new_id
from gateway.domain.status import STATUS_AFTER
from gateway.records import utcnow
from gateway.store.models import (
    Account,
    ApiKey,
    AuditEntry,
    EnforcementAction,
    Flag,
    FlagAccount,
    RequestRow,
)

T = TypeVar("T")

MAX_CURSOR_CHARS: Final = 256
_CURSOR_CHARS: Final = re.compile(r"[A-Za-z0-9_-]+")
#: Integer keys are BIGINT on PostgreSQL, INTEGER (also 64-bit) on SQLite, and start at 1.
_MAX_ROW_ID: Final = 2**63 - 1
_MAX_KEY_CHARS: Final = 64
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


class InvalidCursor(ValueError):
    """A pagination cursor that this module did not produce (or for another list)."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list; ``next_cursor`` is None on the last page."""

    items: list[T]
    next_cursor: str | None


# --- helpers ---------------------------------------------------------------------------------


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values (SQLite) are taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def is_storable(text: str) -> bool:
    """False for text no database here can store: with NUL (PostgreSQL text refuses it) or an
    unpaired UTF-16 surrogate (no driver encodes it; JSON can carry one as ``"\\ud800"``)."""
    return _UNSTORABLE.search(text) is None


def encode_cursor(list_name: str, *parts: str | int) -> str:
    raw = json.dumps([list_name, *parts], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, list_name: str, kinds: tuple[type, ...]) -> list[Any]:
    """The parts of a cursor of ``list_name``, each of its kind and within its column's range
    (ints are row ids, strs are keys); raises :class:`InvalidCursor`."""
    parts = _cursor_json(cursor)
    if not isinstance(parts, list) or len(parts) != len(kinds) + 1 or parts[0] != list_name:
        raise InvalidCursor("malformed cursor")
    values = parts[1:]
    if not all(_fits(value, kind) for value, kind in zip(values, kinds, strict=True)):
        raise InvalidCursor("malformed cursor")
    return values


def _cursor_json(cursor: str) -> Any:
    """The JSON inside a cursor, read only when the cursor is short urlsafe base64."""
    if len(cursor) > MAX_CURSOR_CHARS or not _CURSOR_CHARS.fullmatch(cursor):
        raise InvalidCursor("malformed cursor")
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise InvalidCursor("malformed cursor") from exc


def _fits(value: Any, kind: type) -> bool:
    if kind is int:
        return type(value) is int and 0 < value <= _MAX_ROW_ID
    return (
        type(value) is str and 0 < len(value) <= _MAX_KEY_CHARS and is_storable(value)
    )


def _list_name(model: Any) -> str:
    """A list's name in its cursors: its table's (``model`` is a mapped class)."""
    return str(model.__table__.name)


def _time_cursor(created_at: datetime, ident: str) -> tuple[str, str]:
    return as_utc(created_at).isoformat(), ident


def _decode_time_cursor(cursor: str, list_name: str) -> tuple[datetime, str]:
    stamp, ident = decode_cursor(cursor, list_name, (str, str))
    try:
        when = datetime.fromisoformat(stamp)
        utc = as_utc(when)
    except (ValueError, OverflowError) as exc:  # OverflowError: beyond the UTC range
        raise InvalidCursor("malformed cursor") from exc
    if when.tzinfo is None:
        raise InvalidCursor("malformed cursor")
    return utc, ident


def _older_than(
    created: InstrumentedAttribute[datetime], ident: InstrumentedAttribute[str], cursor: str
) -> ColumnElement[bool]:
    when, last_id = _decode_time_cursor(cursor, _list_name(ident.class_))
    # The redundant ``created <= when`` is an upper bound the planner can use alone: an index
    # range, and partition pruning on the (partitioned) request log.
    return and_(created <= when, or_(created < when, and_(created == when, ident < last_id)))


def _below(row_id: InstrumentedAttribute[int], cursor: str) -> ColumnElement[bool]:
    (last_id,) = decode_cursor(cursor, _list_name(row_id.class_), (int,))
    below: ColumnElement[bool] = row_id < last_id
    return below


async def _page(
    session: AsyncSession,
    query: Select[T],
    limit: int,
    cursor_of: Callable[[T], tuple[str | int, ...]],
) -> Page[T]:
    rows = list((await session.scalars(query.limit(limit + 1))).all())
    items = rows[:limit]
    if len(rows) <= limit:
        return Page(items, None)
    last = items[-1]
    return Page(items, encode_cursor(_list_name(type(last)), *cursor_of(last)))


# --- API keys --------------------------------------------------------------------------------


async def find_key(session: AsyncSession, key_hash: str) -> tuple[ApiKey, Account] | None:
    """The active (not revoked) key with this hash and its account: one indexed join."""
    query = (
        select(ApiKey, Account)
        .join(Account, ApiKey.account_id == Account.id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    row = (await session.execute(query)).first()
    return None if row is None else (row[0], row[1])


async def create_key(
    session: AsyncSession, account_id: str, hash_secret: bytes
) -> tuple[ApiKey, str]:
    """A new key for an existing account. The plaintext is returned here and never stored."""
    plaintext = generate_key()
    key = ApiKey(
        id=new_id("key"),
        account_id=account_id,
        key_hash=hash_key(plaintext, hash_secret),
        prefix=key_prefix(plaintext),
        created_at=utcnow(),
    )
    session.add(key)
    await session.flush()
    return key, plaintext


async def list_keys(session: AsyncSession, account_id: str) -> list[ApiKey]:
    """Every key of the account, revoked ones included, newest first."""
    query = (
        select(ApiKey)
        .where(ApiKey.account_id == account_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return list((await session.scalars(query)).all())


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    """Revoke the key (idempotent: an earlier ``revoked_at`` is kept); None when unknown."""
    key = await session.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        return None
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key


# --- accounts --------------------------------------------------------------------------------


async def create_account(
    session: AsyncSession, *, name: str, tier: str, limits: Mapping[str, int] | None = None
) -> Account:
    """A new active account. ``limits`` are per-account overrides of the tier's limits."""
    now = utcnow()
    account = Account(
        id=new_id("acct"),
        name=name,
        status="active",
        tier=tier,
        limits=dict(limits) if limits else None,
        risk_score=0.0,
        created_at=now,
        updated_at=now,
    )
    session.add(account)
    await session.flush()
    return account


async def get_account(
    session: AsyncSession, account_id: str, *, for_update: bool = False
) -> Account | None:
    """The account, or None. ``for_update`` locks the row (Postgres) until the transaction ends."""
    return await session.get(Account, account_id, with_for_update=for_update)


async def list_accounts(
    session: AsyncSession,
    *,
    status: str | None = None,
    tier: str | None = None,
    min_risk: float | None = None,
    flagged: bool | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Account]:
    """Accounts newest first (``created_at`` desc, ``id`` desc), filtered; raises InvalidCursor."""
    query = select(Account).order_by(Account.created_at.desc(), Account.id.desc())
    if flagged is not None:
        query = query.where(flagged_clause(flagged))
    if status is not None:
        query = query.where(Account.status == status)
    if tier is not None:
        query = query.where(Account.tier == tier)
    if min_risk is not None:
        query = query.where(Account.risk_score >= min_risk)
    if cursor is not None:
        query = query.where(_older_than(Account.created_at, Account.id, cursor))
    return await _page(session, query, limit, lambda a: _time_cursor(a.created_at, a.id))


def merge_overrides(
    current: Mapping[str, int] | None, changes: Mapping[str, int | None]
) -> dict[str, int] | None:
    """``current`` with ``changes`` applied: a value sets an override, None removes it."""
    merged = dict(current or {})
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged or None


async def update_account(
    session: AsyncSession,
    account_id: str,
    *,
    name: str | None = None,
    tier: str | None = None,
    limit_changes: Mapping[str, int | None] | None = None,
    clear_limits: bool = False,
) -> Account | None:
    """Apply a partial update; None when the account does not exist.

    ``clear_limits`` drops every override before ``limit_changes`` (see :func:`merge_overrides`)
    are applied. Arguments left as None are unchanged.
    """
    account = await get_account(session, account_id, for_update=True)
    if account is None:
        return None
    if name is not None:
        account.name = name
    if tier is not None:
        account.tier = tier
    if clear_limits or limit_changes:
        base = None if clear_limits else account.limits
        account.limits = merge_overrides(base, limit_changes or {})
    account.updated_at = utcnow()
    await session.flush()
    return account


# --- enforcement -----------------------------------------------------------------------------


async def record_action(
    session: AsyncSession, account: Account, *, action: str, reason: str, actor: str
) -> EnforcementAction:
    """Apply ``action`` to ``account`` (see STATUS_AFTER) and record it as ToS evidence.

    Load ``account`` with ``get_account(..., for_update=True)`` in the same transaction so that
    ``previous_status`` is exact under concurrent actions.
    """
    if action not in STATUS_AFTER:
        raise ValueError(f"unknown action {action!r}")
    previous = account.status
    new_status = STATUS_AFTER[action] or previous
    now = utcnow()
    account.status = new_status
    account.updated_at = now
    record = EnforcementAction(
        account_id=account.id,
        action=action,
        reason=reason,
        actor=actor,
        previous_status=previous,
        new_status=new_status,
        created_at=now,
    )
    session.add(record)
    await session.flush()
    return record


async def list_actions(
    session: AsyncSession, account_id: str, *, limit: int = 50, cursor: str | None = None
) -> Page[EnforcementAction]:
    """The account's enforcement actions, newest first; raises InvalidCursor."""
    query = (
        select(EnforcementAction)
        .where(EnforcementAction.account_id == account_id)
        .order_by(EnforcementAction.id.desc())
    )
    if cursor is not None:
        query = query.where(_below(EnforcementAction.id, cursor))
    return await _page(session, query, limit, lambda a: (a.id,))


# --- request records -------------------------------------------------------------------------


async def list_requests(
    session: AsyncSession,
    account_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[RequestRow]:
    """The account's request records newest first, ``since`` <= created_at < ``until``.

    Ordered by (created_at, request_id) desc, served by the (account_id, created_at) index;
    raises InvalidCursor.
    """
    query = requests_query(account_id, since=since, until=until, cursor=cursor)
    return await _page(session, query, limit, lambda r: _time_cursor(r.created_at, r.request_id))


def requests_query(account_id: str, *, since: datetime | None = None,
                   until: datetime | None = None, cursor: str | None = None
                   ) -> Select[RequestRow]:
    """:func:`list_requests`' query (without its limit). On PostgreSQL, ``since``/``until``
    and the cursor bound ``created_at``, so only the partitions of that window are read."""
    query = (
        select(RequestRow)
        .where(RequestRow.account_id == account_id)
        .order_by(RequestRow.created_at.desc(), RequestRow.request_id.desc())
    )
    if since is not None:
        query = query.where(RequestRow.created_at >= as_utc(since))
    if until is not None:
        query = query.where(RequestRow.created_at < as_utc(until))
    if cursor is not None:
        query = query.where(_older_than(RequestRow.created_at, RequestRow.request_id, cursor))
    return query


# --- audit -----------------------------------------------------------------------------------


async def write_audit(
    session: AsyncSession,
    *,
    actor: str,
    role: str,
    action: str,
    target_type: str,
    target_id: str | None,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Add an audit entry to the caller's transaction. ``details`` must hold no secrets."""
    entry = AuditEntry(
        actor=actor,
        role=role,
        action=action,
        target_type=target_type,
        target_id=target_id,
        reason=reason,
        details=dict(details) if details else None,
        created_at=utcnow(),
    )
    session.add(entry)
    await session.flush()
    return entry


async def list_audit(
    session: AsyncSession,
    *,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[AuditEntry]:
    """Audit entries newest first (by id), filtered by exact match; raises InvalidCursor."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    filters: Sequence[tuple[InstrumentedAttribute[Any], str | None]] = (
        (AuditEntry.actor, actor),
        (AuditEntry.action, action),
        (AuditEntry.target_type, target_type),
        (AuditEntry.target_id, target_id),
    )
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
    if cursor is not None:
        query = query.where(_below(AuditEntry.id, cursor))
    return await _page(session, query, limit, lambda e: (e.id,))


def flagged_clause(flagged: bool) -> ColumnElement[bool]:
    """Accounts covered (or not) by an open flag, as an account or a campaign member."""
    covered = exists().where(
        FlagAccount.account_id == Account.id, FlagAccount.flag_id == Flag.id,
        Flag.status == "open")
    return covered if flagged else ~covered
