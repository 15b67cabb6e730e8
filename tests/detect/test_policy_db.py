"""The detector's policy against real databases: flags, enforcement, audit, dismissals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.detect import features, window
from gateway.detect.campaign import Campaign
from gateway.detect.enforce import DbPolicy, Thresholds
from gateway.detect.ledger import RiskLedger
from gateway.detect.risk import RiskState
from gateway.detect.runtime import Scored
from gateway.detect.window_store import MemoryWindowStore
from gateway.metrics import Metrics
from gateway.store import flags as flag_store
from gateway.store import repository as repo
from gateway.store.db import create_engine, session_factory
from gateway.store.models import Account, AuditEntry, EnforcementAction, FlagAccount
from tests.detect.conftest import record
from tests.support.postgres import discard_database, migrated_database
from tests.support.tcp_proxy import TcpProxy


class FakeEvidence:
    async def explain(self, arrays: Any) -> list[str]:
        return ["prompts that elicit step-by-step reasoning (score 0.97, 0.20 without it)"]

    async def windows(self, accounts: Sequence[str]) -> dict[str, list[Any]]:
        return {a: [] for a in accounts}


def _scored(account: str, risk_value: float, ids: list[str]) -> Scored:
    items = [features.extract(*record(f"p {i}", account=account, rid=r, ts=1e9 + i))
             for i, r in enumerate(ids)]
    state = RiskState(risk_value, 1e9 + len(ids), risk_value)
    return Scored(account, risk_value, RiskState(), state, window.build(items, 64), ids)


async def _account(sessions: async_sessionmaker[AsyncSession]) -> str:
    async with sessions.begin() as session:
        return (await repo.create_account(session, name="suspect", tier="standard")).id


def _policy(sessions: async_sessionmaker[AsyncSession], changed: list[str],
            **thresholds: float) -> tuple[DbPolicy, MemoryWindowStore]:
    """The policy with a real in-process store behind its risk ledger."""
    store = MemoryWindowStore(64)
    metrics = Metrics(CollectorRegistry())
    ledger = RiskLedger(sessions, store, flush_interval_s=3600, metrics=metrics)
    policy = DbPolicy(sessions, Thresholds(flag=0.6, **thresholds), "window-v1+abc", ledger,
                      FakeEvidence(), changed.append, metrics=metrics)
    return policy, store


async def test_flag_raised_once_with_evidence_and_audit(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _account(sessions)
    changed: list[str] = []
    policy, _ = _policy(sessions, changed)
    ids = [f"req_{i}" for i in range(30)]
    await policy.on_scored([_scored(account, 0.5, ids)])
    await policy.idle()
    async with sessions() as session:
        assert (await flag_store.list_flags(session)).items == []
    await policy.on_scored([_scored(account, 0.8, ids)])
    await policy.idle()
    await policy.on_scored([_scored(account, 0.9, [*ids, "req_x"])])
    await policy.idle()
    async with sessions() as session:
        flags = (await flag_store.list_flags(session, status="open")).items
        assert len(flags) == 1
        flag = flags[0]
        assert flag.account_id == account and flag.account_ids == [account]
        assert flag.score == 0.9 and flag.model_version == "window-v1+abc"
        assert "reasoning" in flag.reasons[0]
        assert flag.evidence["request_ids"] == ids[-10:]
        audit = (await session.scalars(select(AuditEntry).where(
            AuditEntry.target_id == flag.id))).all()
        assert [(a.actor, a.action) for a in audit] == [("detector", "flag.create")]
        acct = await repo.get_account(session, account)
        assert acct is not None and acct.status == "active" and acct.risk_score == 0.9
    assert changed == []


async def test_thresholds_throttle_then_suspend(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _account(sessions)
    changed: list[str] = []
    policy, _ = _policy(sessions, changed, throttle=0.7, suspend=0.9)
    await policy.on_scored([_scored(account, 0.75, ["a", "b"])])
    await policy.idle()
    await policy.on_scored([_scored(account, 0.95, ["a", "b", "c"])])
    await policy.idle()
    async with sessions() as session:
        actions = (await session.scalars(select(EnforcementAction).where(
            EnforcementAction.account_id == account).order_by(EnforcementAction.id))).all()
        assert [(a.action, a.actor, a.new_status) for a in actions] == [
            ("throttle", "detector", "throttled"), ("suspend", "detector", "suspended")]
        audit = (await session.scalars(select(AuditEntry.action).where(
            AuditEntry.target_id == account))).all()
        assert set(audit) == {"account.throttle", "account.suspend"}
    assert changed == [account, account]


async def test_dismissed_flag_not_reraised_for_same_evidence(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _account(sessions)
    policy, store = _policy(sessions, [])
    ids = [f"r{i}" for i in range(20)]
    await policy.on_scored([_scored(account, 0.8, ids)])
    await policy.idle()
    async with sessions.begin() as session:
        flag = (await flag_store.list_flags(session)).items[0]
        await flag_store.review_flag(session, flag, decision="dismiss", actor="rita", note="ok")
    await policy.on_scored([_scored(account, 0.85, [*ids[5:], "n1", "n2"])])
    await policy.idle()
    async with sessions() as session:
        assert len((await flag_store.list_flags(session)).items) == 1
    assert (await store.exchange([], [account])).risks[account].risk < 0.5
    fresh = [f"new{i}" for i in range(20)]
    await policy.on_scored([_scored(account, 0.85, fresh)])
    await policy.idle()
    async with sessions() as session:
        assert len((await flag_store.list_flags(session, status="open")).items) == 1


async def test_risk_scores_flushed_in_batches(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _account(sessions)
    policy, _ = _policy(sessions, [])
    await policy.on_scored([_scored(account, 0.3, ["a"])])
    await policy.ledger.flush()
    async with sessions() as session:
        acct = await session.get(Account, account)
        assert acct is not None and acct.risk_score == 0.3


async def test_campaign_flag_lists_every_account_once(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    accounts = [await _account(sessions) for _ in range(4)]
    policy, _ = _policy(sessions, [])
    found = [Campaign(accounts[:3], 0.4, ["3 accounts send prompts built from one template"])]
    await policy.on_campaigns(found)
    await policy.idle()
    await policy.on_campaigns([Campaign(accounts, 0.5, ["4 accounts ..."])])
    await policy.idle()
    async with sessions() as session:
        flags = (await flag_store.list_flags(session, kind="campaign")).items
        assert len(flags) == 1
        assert flags[0].account_ids == accounts and flags[0].score == 0.5
        assert flags[0].reasons == ["4 accounts ..."]
        members = (await session.scalars(select(FlagAccount.account_id).where(
            FlagAccount.flag_id == flags[0].id))).all()
        assert sorted(members) == sorted(accounts)
        for a in accounts:
            page = await flag_store.list_flags(session, account_id=a)
            assert [f.id for f in page.items] == [flags[0].id]
        flagged = (await session.scalars(select(Account.id).where(
            repo.flagged_clause(True)))).all()
        assert sorted(flagged) == sorted(accounts)


async def _identities(sessions: async_sessionmaker[AsyncSession],
                      accounts: Sequence[str]) -> list[str | None]:
    async with sessions() as session:
        return [(await session.get(Account, a)).watermark_identity  # type: ignore[union-attr]
                for a in accounts]


async def test_a_campaign_flag_serves_its_accounts_under_one_cohort_key_from_then_on(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    """A smooth student of ten accounts' harvests averages ten keys away; one cohort key from
    the flag on leaves it one key to learn. New members join; a member of an earlier campaign
    keeps that campaign's key (its outputs so far carry it); the key cache hears of each."""
    accounts = [await _account(sessions) for _ in range(6)]
    changed: list[str] = []
    policy, _ = _policy(sessions, changed)
    await policy.on_campaigns([Campaign(accounts[:2], 0.4, ["2 accounts, one template"])])
    await policy.idle()
    async with sessions() as session:
        first = (await flag_store.list_flags(session, kind="campaign")).items[0]
    assert await _identities(sessions, accounts[:2]) == [f"cohort:{first.id}"] * 2
    assert sorted(changed) == sorted(accounts[:2])

    await policy.on_campaigns([Campaign(accounts[2:5], 0.5, ["3 accounts, one template"])])
    await policy.idle()
    await policy.on_campaigns([Campaign([*accounts[2:5], accounts[5], accounts[0]], 0.6,
                                        ["5 accounts, one template"])])
    await policy.idle()
    async with sessions() as session:
        second = next(f for f in (await flag_store.list_flags(session, kind="campaign")).items
                      if f.id != first.id)
        audit = (await session.scalars(select(AuditEntry).where(
            AuditEntry.action == "watermark.cohort_join"))).all()
    assert await _identities(sessions, accounts) == [
        f"cohort:{first.id}", f"cohort:{first.id}", *[f"cohort:{second.id}"] * 4]
    assert sorted(changed) == sorted(accounts)  # accounts[0] stayed: not told twice
    joins = sorted((e.target_id, e.actor, sorted(e.details["account_ids"])) for e in audit)
    assert joins == sorted([(f"cohort:{first.id}", "detector", sorted(accounts[:2])),
                            (f"cohort:{second.id}", "detector", sorted(accounts[2:5])),
                            (f"cohort:{second.id}", "detector", [accounts[5]])])


@pytest.mark.integration  # its own PostgreSQL database, behind a proxy it cuts
async def test_a_flag_that_meets_a_database_outage_is_written_when_it_ends(
        tmp_path: Path) -> None:
    """The account crosses the threshold while PostgreSQL is cut and never sends again (the
    harvester's best moment to stop): its flag is retried until written, not lost."""
    url = await migrated_database("postgres", tmp_path)
    host, port = url.split("@", 1)[1].split("/", 1)[0].split(":")
    engine = None
    try:
        async with TcpProxy(host, int(port)) as proxy:
            engine = create_engine(proxy.rewrite_url(url))
            sessions = session_factory(engine)
            account = await _account(sessions)
            policy, _ = _policy(sessions, [])
            proxy.cut()
            await policy.on_scored([_scored(account, 0.9, [f"r{i}" for i in range(12)])])
            await policy.idle()
            assert policy.failing == 1
            assert policy.metrics.registry.get_sample_value(
                "gateway_detect_errors_total", {"stage": "flag"}) == 1

            policy.retry_failed()  # still cut: kept for the next retry
            await policy.idle()
            assert policy.failing == 1
            proxy.restore()
            policy.retry_failed()
            await policy.idle()
            assert policy.failing == 0
            async with sessions() as session:
                flags = (await flag_store.list_flags(session, status="open")).items
            assert [(f.account_id, f.score) for f in flags] == [(account, 0.9)]
    finally:
        if engine is not None:
            await engine.dispose()
        await discard_database(url)
