"""The repository against real databases (PostgreSQL and SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.domain.keys import hash_key
from gateway.store import repository as repo
from gateway.store.models import Account, ApiKey, RequestRow

SECRET = b"test-key-hash-secret"
Sessions = async_sessionmaker[AsyncSession]


async def _account(sessions: Sessions, name: str = "acme", tier: str = "standard") -> Account:
    async with sessions() as session, session.begin():
        return await repo.create_account(session, name=name, tier=tier)


async def test_find_key_returns_the_active_key_and_its_account(sessions: Sessions) -> None:
    account = await _account(sessions)
    async with sessions() as session, session.begin():
        key, plaintext = await repo.create_key(session, account.id, SECRET)
    async with sessions() as session:
        found = await repo.find_key(session, hash_key(plaintext, SECRET))
    assert found is not None
    assert (found[0].id, found[1].id) == (key.id, account.id)


async def test_keys_are_stored_as_keyed_hashes_only(sessions: Sessions) -> None:
    account = await _account(sessions)
    async with sessions() as session, session.begin():
        key, plaintext = await repo.create_key(session, account.id, SECRET)
    async with sessions() as session:
        stored = await session.get(ApiKey, key.id)
    assert stored is not None
    assert stored.key_hash == hash_key(plaintext, SECRET) != plaintext
    assert plaintext not in stored.key_hash
    assert plaintext.startswith(stored.prefix) and len(stored.prefix) < len(plaintext)


async def test_find_key_misses_unknown_hashes_and_revoked_keys(sessions: Sessions) -> None:
    account = await _account(sessions)
    async with sessions() as session, session.begin():
        key, plaintext = await repo.create_key(session, account.id, SECRET)
    async with sessions() as session:
        assert await repo.find_key(session, hash_key("sk-gw-unknown", SECRET)) is None
        assert await repo.find_key(session, hash_key(plaintext, b"another secret")) is None
    async with sessions() as session, session.begin():
        revoked = await repo.revoke_key(session, key.id)
    assert revoked is not None and revoked.revoked_at is not None
    async with sessions() as session:
        assert await repo.find_key(session, hash_key(plaintext, SECRET)) is None


async def test_revoking_twice_keeps_the_first_revocation_time(sessions: Sessions) -> None:
    account = await _account(sessions)
    async with sessions() as session, session.begin():
        key, _ = await repo.create_key(session, account.id, SECRET)
    async with sessions() as session, session.begin():
        first = await repo.revoke_key(session, key.id)
        assert first is not None
        first_at = first.revoked_at
    async with sessions() as session, session.begin():
        again = await repo.revoke_key(session, key.id)
        assert again is not None and again.revoked_at is not None and first_at is not None
        assert repo.as_utc(again.revoked_at) == repo.as_utc(first_at)
        assert await repo.revoke_key(session, "key_missing") is None


async def test_account_pages_walk_every_account_once_even_with_equal_timestamps(
    sessions: Sessions,
) -> None:
    ids = {(await _account(sessions, f"a{i}")).id for i in range(7)}
    same_moment = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    tied = sorted(ids)[:4]
    async with sessions() as session, session.begin():
        await session.execute(
            update(Account).where(Account.id.in_(tied)).values(created_at=same_moment)
        )
    seen: list[str] = []
    cursor = None
    while True:
        async with sessions() as session:
            page = await repo.list_accounts(session, limit=2, cursor=cursor)
        seen += [a.id for a in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    assert seen[-4:] == sorted(tied, reverse=True)  # oldest last; ties by id, descending


async def test_account_filters(sessions: Sessions) -> None:
    calm = await _account(sessions, "calm", tier="free")
    risky = await _account(sessions, "risky", tier="standard")
    async with sessions() as session, session.begin():
        await session.execute(update(Account).where(Account.id == risky.id).values(risk_score=0.9))
        stored = await repo.get_account(session, calm.id, for_update=True)
        assert stored is not None
        await repo.record_action(session, stored, action="suspend", reason="r", actor="t")
    async with sessions() as session:
        by_tier = await repo.list_accounts(session, tier="free")
        by_risk = await repo.list_accounts(session, min_risk=0.5)
        by_status = await repo.list_accounts(session, status="suspended")
    assert [a.id for a in by_tier.items] == [calm.id]
    assert [a.id for a in by_risk.items] == [risky.id]
    assert [a.id for a in by_status.items] == [calm.id]


@pytest.mark.parametrize("cursor", ["%%%", "bm90LWpzb24", "WzFd", "WyJ4IiwiYSJd"])
async def test_foreign_cursors_are_rejected(sessions: Sessions, cursor: str) -> None:
    async with sessions() as session:
        with pytest.raises(repo.InvalidCursor):
            await repo.list_accounts(session, cursor=cursor)


def test_merge_overrides_sets_and_removes() -> None:
    assert repo.merge_overrides({"a": 1, "b": 2}, {"b": None, "c": 3}) == {"a": 1, "c": 3}
    assert repo.merge_overrides({"a": 1}, {"a": None}) is None
    assert repo.merge_overrides(None, {}) is None


async def test_requests_pages_and_time_window(sessions: Sessions) -> None:
    account = await _account(sessions)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    async with sessions() as session, session.begin():
        for i in range(6):
            session.add(RequestRow(
                request_id=f"req_{i}", account_id=account.id, route="/v1/chat/completions",
                method="POST", status_code=200, created_at=start + timedelta(minutes=i // 2),
            ))
        session.add(RequestRow(
            request_id="req_other", account_id="acct_other", route="/v1/models", method="GET",
            status_code=200, created_at=start,
        ))
    seen: list[str] = []
    cursor = None
    async with sessions() as session:
        while True:
            page = await repo.list_requests(session, account.id, limit=4, cursor=cursor)
            seen += [r.request_id for r in page.items]
            if (cursor := page.next_cursor) is None:
                break
        since, until = start + timedelta(minutes=1), start + timedelta(minutes=2)
        window = await repo.list_requests(session, account.id, since=since, until=until)
    assert seen == ["req_5", "req_4", "req_3", "req_2", "req_1", "req_0"]
    assert [r.request_id for r in window.items] == ["req_3", "req_2"]
