"""Queries for extraction flags (the detector writes them, the admin API reads and reviews them).

Same conventions as :mod:`gateway.store.repository`: functions take an AsyncSession and only
flush (the caller owns the transaction); lists are newest first with an opaque cursor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.domain.cohorts import COHORT_PREFIX, cohort_identity, is_cohort
from gateway.domain.keys import new_id
from gateway.records import utcnow
from gateway.store import repository as repo
from gateway.store.models import Account, Flag, FlagAccount

FLAG_STATUSES: Final = ("open", "confirmed", "dismissed")
DECISION_STATUS: Final = {"confirm": "confirmed", "dismiss": "dismissed"}


async def create_flag(
    session: AsyncSession, *, kind: str, account_ids: Sequence[str], score: float,
    model_version: str, reasons: Sequence[str], evidence: Mapping[str, Any],
) -> Flag:
    """A new open flag covering ``account_ids`` (the first is the flag's ``account_id``)."""
    now = utcnow()
    flag = Flag(
        id=new_id("flag"), kind=kind, account_id=account_ids[0], status="open",
        score=float(score), model_version=model_version[:100], reasons=list(reasons),
        account_ids=list(account_ids), evidence=dict(evidence), created_at=now, updated_at=now,
    )
    session.add(flag)
    await session.flush()
    session.add_all(FlagAccount(flag_id=flag.id, account_id=a) for a in dict.fromkeys(account_ids))
    await session.flush()
    return flag


async def add_accounts(session: AsyncSession, flag: Flag, account_ids: Sequence[str]) -> None:
    """Extend a (campaign) flag with more accounts."""
    new = [a for a in dict.fromkeys(account_ids) if a not in flag.account_ids]
    if not new:
        return
    flag.account_ids = [*flag.account_ids, *new]
    flag.updated_at = utcnow()
    session.add_all(FlagAccount(flag_id=flag.id, account_id=a) for a in new)
    await session.flush()


async def get_flag(session: AsyncSession, flag_id: str, *, for_update: bool = False
                   ) -> Flag | None:
    return await session.get(Flag, flag_id, with_for_update=for_update)


async def latest_flag(session: AsyncSession, account_id: str, *, kind: str = "account",
                      status: str | None = None) -> Flag | None:
    query = (select(Flag).where(Flag.account_id == account_id, Flag.kind == kind)
             .order_by(Flag.created_at.desc(), Flag.id.desc()).limit(1))
    if status is not None:
        query = query.where(Flag.status == status)
    return (await session.scalars(query)).first()


async def campaign_flags(session: AsyncSession, statuses: Sequence[str]) -> list[Flag]:
    query = select(Flag).where(Flag.kind == "campaign", Flag.status.in_(statuses))
    return list((await session.scalars(query.order_by(Flag.created_at.desc()).limit(500))).all())


async def watermark_identities(session: AsyncSession) -> list[str]:
    """Every identity outputs may have been watermarked under: each account's own, and the
    cohort of every campaign ever flagged (its accounts were served under it while the flag
    stood, :mod:`gateway.domain.cohorts`)."""
    ids = (await session.scalars(select(Account.id).order_by(Account.id))).all()
    campaigns = (await session.scalars(
        select(Flag.id).where(Flag.kind == "campaign").order_by(Flag.id))).all()
    return [*ids, *(cohort_identity(f) for f in campaigns)]


@dataclass(frozen=True, slots=True)
class Attributed:
    """Who a watermark identity names: one account, or a flagged campaign's cohort, reported as
    a campaign flag is (``account_id`` its first account, ``account_ids`` all of them; an account
    that was already in an earlier cohort when this flag named it is listed, though it kept the
    earlier cohort's key: the audit log's ``watermark.cohort_join`` entries say who joined)."""

    account_id: str | None
    account_ids: list[str]
    cohort: str | None = None


async def attributed(session: AsyncSession, identity: str | None) -> Attributed:
    """The accounts behind ``identity`` (an account id or ``cohort:<flag id>``; None: nobody).
    Only a cohort reads the database (its campaign flag's accounts)."""
    if identity is None:
        return Attributed(None, [])
    if not is_cohort(identity):
        return Attributed(identity, [identity])
    flag = await session.get(Flag, identity.removeprefix(COHORT_PREFIX))
    members = list(flag.account_ids) if flag is not None else []
    return Attributed(members[0] if members else None, members, identity)


async def list_flags(
    session: AsyncSession, *, status: str | None = None, account_id: str | None = None,
    kind: str | None = None, limit: int = 50, cursor: str | None = None,
) -> repo.Page[Flag]:
    """Flags newest first; ``account_id`` matches any account a flag covers."""
    query = select(Flag).order_by(Flag.created_at.desc(), Flag.id.desc())
    if status is not None:
        query = query.where(Flag.status == status)
    if kind is not None:
        query = query.where(Flag.kind == kind)
    if account_id is not None:
        query = query.where(exists().where(FlagAccount.flag_id == Flag.id,
                                           FlagAccount.account_id == account_id))
    if cursor is not None:
        query = query.where(repo._older_than(Flag.created_at, Flag.id, cursor))
    return await repo._page(session, query, limit,
                            lambda f: repo._time_cursor(f.created_at, f.id))


async def review_flag(session: AsyncSession, flag: Flag, *, decision: str, actor: str,
                      note: str | None) -> None:
    flag.status = DECISION_STATUS[decision]
    flag.reviewed_by = actor
    flag.reviewed_at = utcnow()
    flag.review_note = note
    flag.updated_at = flag.reviewed_at
    await session.flush()


async def set_risk_scores(session: AsyncSession, scores: Mapping[str, float]) -> None:
    """Bulk-update ``accounts.risk_score`` (unknown ids are ignored)."""
    if scores:
        await session.execute(
            update(Account), [{"id": a, "risk_score": round(s, 4)} for a, s in scores.items()])


async def scale_risk(session: AsyncSession, account_ids: Sequence[str], factor: float) -> None:
    await session.execute(update(Account).where(Account.id.in_(list(account_ids)))
                          .values(risk_score=Account.risk_score * factor))
