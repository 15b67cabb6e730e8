"""Resolving a key against the database: the principal carries the account's watermark
identity (its own id, or its flagged campaign's cohort)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.auth.lookup import database_loader
from gateway.domain.keys import hash_key
from gateway.settings import Settings
from gateway.store import repository as repo


async def test_a_key_resolves_to_its_account_and_its_watermark_identity(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    settings = Settings(mode="local")
    secret = settings.key_hash_key()
    async with sessions.begin() as session:
        plain = await repo.create_account(session, name="plain", tier="standard")
        member = await repo.create_account(session, name="member", tier="standard")
        member.watermark_identity = "cohort:flag_1"
        _, plain_key = await repo.create_key(session, plain.id, secret)
        _, member_key = await repo.create_key(session, member.id, secret)
    load = database_loader(sessions, settings)
    alone = await load(hash_key(plain_key, secret))
    cohort = await load(hash_key(member_key, secret))
    assert alone is not None and cohort is not None
    assert (alone.account_id, alone.watermark_identity) == (plain.id, plain.id)
    assert (cohort.account_id, cohort.watermark_identity) == (member.id, "cohort:flag_1")
    assert await load(hash_key("sk-gw-" + "z" * 40, secret)) is None
