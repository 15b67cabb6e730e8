"""``--accounts`` specs against the database: all, flagged (campaigns become groups),
campaign:ID, and explicit lists; a campaign's cohort watermark identity is tested with it."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.store import flags
from gateway.store import repository as repo
from gateway.suspect.selection import SelectionError, parse_groups, select_accounts


async def test_specs_resolve_to_accounts_and_campaign_groups(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        ids = [(await repo.create_account(session, name=f"a{i}", tier="standard")).id
               for i in range(5)]
        campaign = await flags.create_flag(
            session, kind="campaign", account_ids=ids[1:4], score=0.9, model_version="t",
            reasons=["shared template"], evidence={})
        await flags.create_flag(session, kind="account", account_ids=[ids[4]], score=0.8,
                                model_version="t", reasons=["volume"], evidence={})
    cohort = f"cohort:{campaign.id}"
    async with sessions() as session:
        assert sorted((await select_accounts(session, "all")).account_ids) == sorted(
            [*ids, cohort])
        flagged = await select_accounts(session, "flagged")
        assert flagged.account_ids == [*sorted(ids[1:5]), cohort]
        assert flagged.groups == {f"campaign:{campaign.id}": ids[1:4]}
        one = await select_accounts(session, f"campaign:{campaign.id}")
        assert one.account_ids == [*sorted(ids[1:4]), cohort] and list(one.groups) == [
            f"campaign:{campaign.id}"]
        assert (await select_accounts(session, f"{ids[0]},{ids[2]}")).account_ids == sorted(
            [ids[0], ids[2]])
        with pytest.raises(SelectionError):
            await select_accounts(session, "campaign:flag_nope")


def test_group_specs_parse_and_refuse_malformed_ones() -> None:
    assert parse_groups(["g=a,b", "h=c,d,e"]) == {"g": ["a", "b"], "h": ["c", "d", "e"]}
    for bad in ("g", "=a,b", "g="):
        with pytest.raises(SelectionError):
            parse_groups([bad])
