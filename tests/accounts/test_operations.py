"""AccountOperations: every change commits with its audit entry, and caches hear of it after.

On a migrated database (``sessions`` from tests/conftest.py), PostgreSQL and SQLite."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.accounts.operations import AccountOperations, CacheNotifier, SystemActor
from gateway.store import repository as repo
from gateway.store.models import AuditEntry, EnforcementAction

REVIEWER = SystemActor("rita", "reviewer")
Sessions = async_sessionmaker[AsyncSession]


@dataclass
class Heard:
    """What the caches were told."""

    accounts: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
def ops(sessions: Sessions, heard: Heard) -> AccountOperations:
    caches = CacheNotifier(account_changed=heard.accounts.append, key_revoked=heard.keys.append)
    return AccountOperations(sessions, caches, key_hash_secret=b"k" * 32)


@pytest.fixture
async def account_id(ops: AccountOperations) -> str:
    """An active account on the standard tier, created (and audited) by the reviewer."""
    async with ops.begin(REVIEWER) as changes:
        account = await changes.create_account(name="acme", tier="standard")
    return account.id


async def act(ops: AccountOperations, account_id: str, action: str) -> EnforcementAction:
    """Apply ``action`` as the reviewer, the account locked as the contract asks."""
    async with ops.begin(REVIEWER) as changes:
        account = await repo.get_account(changes.session, account_id, for_update=True)
        assert account is not None
        return await changes.apply_action(account, action=action, reason=f"{action} it")


async def audit_log(sessions: Sessions) -> list[tuple[str, str]]:
    async with sessions() as session:
        entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
        return [(e.action, e.actor) for e in entries]


async def stored_status(sessions: Sessions, account_id: str) -> str:
    async with sessions() as session:
        account = await repo.get_account(session, account_id)
        assert account is not None
        return account.status


async def test_an_action_commits_with_its_audit_entry_and_then_notifies(
    ops: AccountOperations, sessions: Sessions, heard: Heard, account_id: str,
) -> None:
    record = await act(ops, account_id, "suspend")
    assert (record.previous_status, record.new_status) == ("active", "suspended")
    assert heard.accounts == [account_id]
    assert await audit_log(sessions) == [("account.create", "rita"), ("account.suspend", "rita")]


async def test_the_caches_hear_of_a_change_only_after_its_commit(
    ops: AccountOperations, heard: Heard, account_id: str,
) -> None:
    async with ops.begin(REVIEWER) as changes:
        account = await repo.get_account(changes.session, account_id, for_update=True)
        assert account is not None
        await changes.apply_action(account, action="throttle", reason="bursty")
        assert heard.accounts == []
    assert heard.accounts == [account_id]


async def test_a_warning_changes_no_status_and_notifies_nobody(
    ops: AccountOperations, sessions: Sessions, heard: Heard, account_id: str,
) -> None:
    await act(ops, account_id, "warn")
    assert heard.accounts == []
    assert await stored_status(sessions, account_id) == "active"


async def test_a_change_that_rolls_back_leaves_no_trace_and_notifies_nobody(
    ops: AccountOperations, sessions: Sessions, heard: Heard, account_id: str,
) -> None:
    with pytest.raises(RuntimeError, match="refused"):
        async with ops.begin(REVIEWER) as changes:
            account = await repo.get_account(changes.session, account_id, for_update=True)
            assert account is not None
            await changes.apply_action(account, action="ban", reason="abuse")
            raise RuntimeError("refused")
    assert heard.accounts == []
    assert await stored_status(sessions, account_id) == "active"
    async with sessions() as session:
        assert (await session.scalars(select(EnforcementAction))).all() == []
    assert await audit_log(sessions) == [("account.create", "rita")]


async def test_an_update_audits_what_changed_before_and_after(
    ops: AccountOperations, sessions: Sessions, heard: Heard, account_id: str,
) -> None:
    async with ops.begin(REVIEWER) as changes:
        await changes.update_account(account_id, tier="free",
                                     limit_changes={"max_concurrent": 3}, reason="downgrade")
        assert await changes.update_account("acct_missing", name="x") is None
    assert heard.accounts == [account_id]
    async with sessions() as session:
        entry = (await session.scalars(
            select(AuditEntry).where(AuditEntry.action == "account.update"))).one()
    assert entry.reason == "downgrade"
    assert entry.details == {
        "before": {"tier": "standard", "limit_overrides": {}},
        "after": {"tier": "free", "limit_overrides": {"max_concurrent": 3}},
    }


async def test_keys_are_created_for_existing_accounts_and_revocations_notify_the_hash(
    ops: AccountOperations, sessions: Sessions, heard: Heard, account_id: str,
) -> None:
    async with ops.begin(REVIEWER) as changes:
        created = await changes.create_key(account_id)
        assert await changes.create_key("acct_missing") is None
    assert created is not None
    key, plaintext = created
    assert plaintext.startswith("sk-gw-")
    async with ops.begin(REVIEWER) as changes:
        revoked = await changes.revoke_key(key.id, reason="leaked")
        assert await changes.revoke_key("key_missing") is None
    assert revoked is not None and revoked.revoked_at is not None
    assert heard.keys == [key.key_hash]
    assert [action for action, _ in await audit_log(sessions)] == [
        "account.create", "key.create", "key.revoke"]


async def test_without_a_key_hash_secret_no_key_is_created(
    sessions: Sessions, account_id: str,
) -> None:
    with pytest.raises(RuntimeError, match="key hash secret"):
        async with AccountOperations(sessions).begin(REVIEWER) as changes:
            await changes.create_key(account_id)


async def test_a_failing_cache_notification_is_logged_and_keeps_the_change(
    sessions: Sessions, account_id: str, caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_: str) -> None:
        raise OSError("cache down")

    await act(AccountOperations(sessions, CacheNotifier(account_changed=broken)),
              account_id, "throttle")
    assert await stored_status(sessions, account_id) == "throttled"
    assert "cache notification failed" in caplog.text
