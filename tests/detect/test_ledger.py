"""Account risk has one owner: a reviewer's dismissal lowers the risk the engine reads (the
shared store), and the database's copy follows it, never the other way round."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.admin import AdminDeps, install_error_handlers
from gateway.admin.flags import create_flags_router
from gateway.auth.admin_tokens import AdminTokens
from gateway.detect import risk
from gateway.detect.ledger import RiskLedger
from gateway.detect.redis_window_store import RedisWindowStore
from gateway.detect.risk import RiskState
from gateway.metrics import Metrics
from gateway.redis_client import connect
from gateway.store import flags as flag_store
from gateway.store import repository as repo
from gateway.store.models import Account
from tests.admin.conftest import REVIEWER, make_settings


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisWindowStore]:
    client = connect(redis_url)
    prefix = f"gw:test:{uuid.uuid4().hex[:8]}"
    yield RedisWindowStore(client, 64, prefix=prefix)
    async for key in client.scan_iter(f"{prefix}:*"):  # one by one: keys span slots
        await client.delete(key)
    await client.aclose()


COVERAGE = b"\x07coverage-of-the-harness"


async def _flagged(sessions: async_sessionmaker[AsyncSession], ledger: RiskLedger,
                   store: RedisWindowStore) -> tuple[str, str]:
    """An account the engine scored to 0.8 (store and mirror), under an open flag."""
    async with sessions.begin() as session:
        account = (await repo.create_account(session, name="harness", tier="standard")).id
    await store.save({account: RiskState(0.8, 1e9, 0.9, COVERAGE)}, {})
    ledger.scored({account: 0.8})
    await ledger.flush()
    async with sessions.begin() as session:
        flag = await flag_store.create_flag(
            session, kind="account", account_ids=[account], score=0.8, model_version="m+1",
            reasons=["prompts that elicit step-by-step reasoning"], evidence={})
        return account, flag.id


async def test_a_dismissal_lowers_the_risk_the_engine_reads_and_its_mirror(
        sessions: async_sessionmaker[AsyncSession], store: RedisWindowStore,
        metrics: Metrics) -> None:
    ledger = RiskLedger(sessions, store, flush_interval_s=3600, metrics=metrics)
    account, flag_id = await _flagged(sessions, ledger, store)
    settings = make_settings()
    deps = AdminDeps(sessions=sessions, settings=settings,
                     tokens=AdminTokens.from_settings(settings), metrics=metrics, risk=ledger)
    app = FastAPI()
    app.include_router(create_flags_router(deps))
    install_error_handlers(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw/admin/v1") as api:
        done = await api.post(f"/flags/{flag_id}/review", json={"decision": "dismiss"},
                              headers=REVIEWER)
    assert done.status_code == 200
    assert metrics.registry.get_sample_value(
        "gateway_detect_flag_reviews_total", {"decision": "dismiss"}) == 1
    state = (await store.exchange([], [account])).risks[account]
    assert state.risk == pytest.approx(0.4) and state.peak_score == pytest.approx(0.9)
    assert state.coverage == COVERAGE  # a dismissed harness's re-runs stay known repeats
    async with sessions() as session:
        assert (await session.scalar(select(Account.risk_score)
                                     .where(Account.id == account))) == pytest.approx(0.4)
    # The engine's next scoring starts from the lowered risk, and the mirror follows it: the
    # database copy is never overwritten by an untouched detector copy.
    after = risk.update(state, 0.1, 1e9 + 60, 3 * 86400)
    await store.save({account: after}, {})
    ledger.scored({account: after.risk})
    await ledger.flush()
    async with sessions() as session:
        mirrored = await session.scalar(select(Account.risk_score).where(Account.id == account))
    assert mirrored is not None and mirrored < 0.4


async def test_without_a_detector_a_dismissal_scales_the_only_copy(
        sessions: async_sessionmaker[AsyncSession], metrics: Metrics) -> None:
    async with sessions.begin() as session:
        account = await repo.create_account(session, name="harness", tier="standard")
        account.risk_score = 0.6
    await RiskLedger(sessions, None, metrics=metrics).dismiss([account.id])
    async with sessions() as session:
        assert (await session.scalar(select(Account.risk_score)
                                     .where(Account.id == account.id))) == pytest.approx(0.3)
