"""Which accounts (and groups) a run tests, from an ``--accounts`` spec and the database.

- ``all``: every account, and the cohort of every campaign ever flagged;
- ``flagged``: accounts with an open extraction flag; each open campaign flag is also a group,
  and its cohort is tested too;
- ``campaign:ID``: the members of campaign flag ``ID``, the campaign as a group, and its cohort;
- ``a,b,c``: these account ids (or cohort identities, ``cohort:FLAG``).

A cohort (:mod:`gateway.domain.cohorts`) is the one watermark identity a flagged campaign's
accounts are served under from its flag on; it is tested like one account.

The set must be chosen before the run (the correction counts it); widening it after seeing a
result and re-running is a new test and must be reported as one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.domain.cohorts import cohort_identity
from gateway.store.flags import watermark_identities
from gateway.store.models import Flag


class SelectionError(ValueError):
    """The spec names something that does not exist (the message says what, not secrets)."""


@dataclass(frozen=True)
class Selection:
    account_ids: list[str]
    groups: dict[str, list[str]] = field(default_factory=dict)


def parse_groups(specs: list[str] | None) -> dict[str, list[str]]:
    """``NAME=a,b,c`` entries (the CLI's ``--group``) as a mapping."""
    groups: dict[str, list[str]] = {}
    for spec in specs or []:
        name, sep, members = spec.partition("=")
        if not sep or not name or not members:
            raise SelectionError("a group is NAME=account,account,...")
        groups[name] = [m for m in members.split(",") if m]
    return groups


async def select_accounts(session: AsyncSession, spec: str) -> Selection:
    """Resolve ``spec`` (see the module docstring) against the database."""
    if spec == "all":
        return Selection(await watermark_identities(session))
    if spec == "flagged":
        flags = (await session.scalars(select(Flag).where(Flag.status == "open"))).all()
        ids = sorted({a for f in flags for a in f.account_ids})
        cohorts = sorted(cohort_identity(f.id) for f in flags if f.kind == "campaign")
        groups = {f"campaign:{f.id}": list(f.account_ids) for f in flags
                  if f.kind == "campaign" and len(set(f.account_ids)) > 1}
        return Selection([*ids, *cohorts], groups)
    if spec.startswith("campaign:"):
        flag = await session.get(Flag, spec.removeprefix("campaign:"))
        if flag is None or flag.kind != "campaign":
            raise SelectionError("no such campaign flag")
        return Selection([*sorted(set(flag.account_ids)), cohort_identity(flag.id)],
                         {spec: list(flag.account_ids)})
    ids = sorted({a for a in spec.split(",") if a})
    if not ids:
        raise SelectionError("no accounts selected")
    return Selection(ids)
