"""A declared workload against the detector's policy, on a real database: within its allowance
an account gets no verdict (its risk is still mirrored); past it, the flag comes with its full
risk and says why; a cleared or unreadable declaration withholds nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.detect import coverage, features, window
from gateway.detect.enforce import WITHHOLD_RECHECK_S, DbPolicy, Thresholds
from gateway.detect.ledger import RiskLedger
from gateway.detect.risk import RiskState
from gateway.detect.runtime import Scored
from gateway.detect.window_store import MemoryWindowStore
from gateway.domain.workloads import Workload
from gateway.metrics import Metrics
from gateway.store import flags as flag_store
from gateway.store import repository as repo
from gateway.store.models import EnforcementAction
from tests.detect.conftest import record

pytestmark = pytest.mark.integration
ALLOWANCE = 40


class Evidence:
    async def explain(self, arrays: Any) -> list[str]:
        return ["long chain-of-thought answers to fresh benchmark-style questions"]

    async def windows(self, accounts: Sequence[str]) -> dict[str, list[Any]]:
        return {a: [] for a in accounts}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _scored(account: str, risk_value: float, distinct: int) -> Scored:
    """A scoring of an account that has sent ``distinct`` distinct requests."""
    _, covered = coverage.cover(b"", range(1, distinct + 1))
    assert coverage.count(covered) == distinct
    ids = [f"req_{i}" for i in range(8)]
    items = [features.extract(*record(f"q {i}", account=account, rid=r, ts=1e9 + i))
             for i, r in enumerate(ids)]
    state = RiskState(risk_value, 1e9, risk_value, covered)
    return Scored(account, risk_value, RiskState(), state, window.build(items, 64), ids)


async def _account(sessions: async_sessionmaker[AsyncSession],
                   workload: dict[str, Any] | None) -> str:
    async with sessions.begin() as session:
        account = await repo.create_account(session, name="harness", tier="standard")
        account.workload = workload
        return account.id


def _policy(sessions: async_sessionmaker[AsyncSession],
            clock: Clock) -> tuple[DbPolicy, Metrics]:
    metrics = Metrics(CollectorRegistry())
    ledger = RiskLedger(sessions, MemoryWindowStore(64), flush_interval_s=3600, metrics=metrics)
    policy = DbPolicy(sessions, Thresholds(flag=0.6, throttle=0.7), "window-v4+abc", ledger,
                      Evidence(), lambda _: None, metrics=metrics, clock=clock)
    return policy, metrics


async def _score(policy: DbPolicy, account: str, score: float, distinct: int) -> None:
    """One scoring of ``account`` handed to the policy, and its verdict settled."""
    await policy.on_scored([_scored(account, score, distinct)])
    await policy.idle()


def _withheld(metrics: Metrics) -> float:
    return metrics.detect_withheld.labels("declared_workload")._value.get()


async def _flags(sessions: async_sessionmaker[AsyncSession], account: str) -> list[Any]:
    async with sessions() as session:
        return [f for f in (await flag_store.list_flags(session)).items
                if f.account_id == account]


async def _actions(sessions: async_sessionmaker[AsyncSession], account: str) -> list[str]:
    async with sessions() as session:
        return list((await session.scalars(select(EnforcementAction.action).where(
            EnforcementAction.account_id == account))).all())


async def test_within_its_allowance_a_declared_account_gets_no_verdict(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _account(sessions, Workload("evaluation", ALLOWANCE).to_json())
    policy, metrics = _policy(sessions, Clock())
    await _score(policy, account, 0.95, ALLOWANCE)
    await _score(policy, account, 0.97, ALLOWANCE)  # remembered: no database
    assert await _flags(sessions, account) == []
    assert await _actions(sessions, account) == []  # no throttle either
    assert _withheld(metrics) == 2
    async with sessions() as session:
        acct = await repo.get_account(session, account)
        assert acct is not None and acct.risk_score == 0.95 and acct.status == "active"


async def test_the_first_scoring_past_the_allowance_flags_and_says_why(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _account(sessions, Workload("evaluation", ALLOWANCE).to_json())
    policy, _ = _policy(sessions, Clock())
    await _score(policy, account, 0.95, ALLOWANCE)
    await _score(policy, account, 0.95, ALLOWANCE + 1)
    flags = await _flags(sessions, account)
    assert len(flags) == 1 and flags[0].score == 0.95
    assert f"{ALLOWANCE + 1} distinct requests, allowance {ALLOWANCE}" in flags[0].reasons[-1]
    assert await _actions(sessions, account) == ["throttle"]


async def test_an_undeclared_account_is_flagged_at_once(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _account(sessions, None)
    policy, metrics = _policy(sessions, Clock())
    await _score(policy, account, 0.95, 3)
    assert len(await _flags(sessions, account)) == 1
    assert _withheld(metrics) == 0


@pytest.mark.parametrize("stored", [
    {"kind": "evaluation", "allowance": True},
    {"kind": "evaluation", "allowance": 0},
    {"kind": "evaluation", "allowance": "999"},
    {"kind": "chat", "allowance": 999},
    {"allowance": 999},
    ["evaluation", 999],
])
async def test_an_unreadable_declaration_withholds_nothing(
        sessions: async_sessionmaker[AsyncSession], stored: Any) -> None:
    account = await _account(sessions, stored)
    policy, _ = _policy(sessions, Clock())
    await _score(policy, account, 0.95, 1)
    assert len(await _flags(sessions, account)) == 1


async def test_a_cleared_declaration_takes_effect_within_the_recheck_time(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _account(sessions, Workload("evaluation", ALLOWANCE).to_json())
    clock = Clock()
    policy, _ = _policy(sessions, clock)
    await _score(policy, account, 0.95, 5)
    async with sessions.begin() as session:
        acct = await repo.get_account(session, account)
        assert acct is not None
        acct.workload = None
    await _score(policy, account, 0.95, 5)
    assert await _flags(sessions, account) == []  # still remembered
    clock.now += WITHHOLD_RECHECK_S
    await _score(policy, account, 0.95, 5)
    assert len(await _flags(sessions, account)) == 1
