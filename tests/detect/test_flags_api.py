"""``/admin/v1/flags``: list with filters and cursors, evidence, audited review, roles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.admin import AdminDeps, install_error_handlers
from gateway.admin.flags import create_flags_router
from gateway.auth.admin_tokens import AdminTokens
from gateway.metrics import Metrics
from gateway.store import flags as flag_store
from gateway.store import repository as repo
from gateway.store.models import Account, AuditEntry, RequestRow
from tests.admin.conftest import ADMIN, REVIEWER, VIEWER, assert_openai_error, make_settings


@pytest.fixture
async def api(
    sessions: async_sessionmaker[AsyncSession], metrics: Metrics,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings()
    deps = AdminDeps(sessions=sessions, settings=settings,
                     tokens=AdminTokens.from_settings(settings), metrics=metrics)
    app = FastAPI()
    app.include_router(create_flags_router(deps))
    install_error_handlers(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw/admin/v1") as client:
        yield client


async def _flag(sessions: async_sessionmaker[AsyncSession], kind: str = "account",
                members: int = 1) -> tuple[str, list[str]]:
    async with sessions.begin() as session:
        accounts = []
        for _ in range(members):
            acct = await repo.create_account(session, name="x", tier="standard")
            acct.risk_score = 0.8
            accounts.append(acct.id)
        session.add(RequestRow(request_id="req_evidence_" + accounts[0][-8:],
                               account_id=accounts[0], route="/v1/chat/completions",
                               method="POST", status_code=200, stream=False, logprobs=False,
                               logit_bias_size=0, prompt_chars=10,
                               created_at=datetime.now(UTC)))
        flag = await flag_store.create_flag(
            session, kind=kind, account_ids=accounts, score=0.8, model_version="m+1",
            reasons=["prompts that elicit step-by-step reasoning"],
            evidence={"request_ids": ["req_evidence_" + accounts[0][-8:], "req_gone"],
                      "window_request_ids": ["secret-internal"]})
        return flag.id, accounts


async def test_list_filters_and_paginates(
        api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = [(await _flag(sessions))[0] for _ in range(3)]
    campaign_id, members = await _flag(sessions, "campaign", members=3)
    page = await api.get("/flags", params={"status": "open", "limit": 2}, headers=VIEWER)
    assert page.status_code == 200
    body = page.json()
    assert set(body) == {"items", "next_cursor"} and len(body["items"]) == 2
    assert body["items"][0]["id"] == campaign_id
    seen = [f["id"] for f in body["items"]]
    while body["next_cursor"]:
        body = (await api.get("/flags", params={"limit": 2, "cursor": body["next_cursor"]},
                              headers=VIEWER)).json()
        seen += [f["id"] for f in body["items"]]
    assert sorted(seen) == sorted([*ids, campaign_id])
    by_member = (await api.get("/flags", params={"account_id": members[2]},
                               headers=VIEWER)).json()
    assert [f["id"] for f in by_member["items"]] == [campaign_id]
    assert by_member["items"][0]["account_ids"] == members
    assert (await api.get("/flags", params={"status": "dismissed"},
                          headers=VIEWER)).json()["items"] == []
    assert_openai_error(await api.get("/flags", params={"cursor": "nope"}, headers=VIEWER),
                        400, param="cursor", code="invalid_cursor")
    assert_openai_error(await api.get("/flags"), 401)


async def test_detail_carries_evidence(
        api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]) -> None:
    flag_id, accounts = await _flag(sessions)
    got = await api.get(f"/flags/{flag_id}", headers=VIEWER)
    assert got.status_code == 200
    body = got.json()
    for key in ("id", "account_id", "status", "score", "reasons", "created_at"):
        assert key in body
    assert body["reasons"] == ["prompts that elicit step-by-step reasoning"]
    assert [r["request_id"] for r in body["requests"]] == ["req_evidence_" + accounts[0][-8:]]
    assert "window_request_ids" not in body["evidence"]
    assert_openai_error(await api.get("/flags/flag_missing", headers=VIEWER), 404,
                        code="flag_not_found")


async def test_review_is_audited_and_dismissal_lowers_risk(
        api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]) -> None:
    flag_id, accounts = await _flag(sessions, members=2)
    assert_openai_error(await api.post(f"/flags/{flag_id}/review", json={"decision": "dismiss"},
                                       headers=VIEWER), 403, code="insufficient_role")
    assert_openai_error(await api.post(f"/flags/{flag_id}/review", json={"decision": "maybe"},
                                       headers=REVIEWER), 400, param="decision")
    done = await api.post(f"/flags/{flag_id}/review",
                          json={"decision": "dismiss", "note": "known eval harness"},
                          headers=REVIEWER)
    assert done.status_code == 200
    assert done.json()["status"] == "dismissed" and done.json()["reviewed_by"] == "rita-reviewer"
    again = await api.post(f"/flags/{flag_id}/review", json={"decision": "confirm"},
                           headers=ADMIN)
    assert_openai_error(again, 409, code="flag_already_reviewed")
    async with sessions() as session:
        risks = (await session.scalars(select(Account.risk_score).where(
            Account.id.in_(accounts)))).all()
        assert risks == [0.4, 0.4]
        audit = (await session.scalars(select(AuditEntry).where(
            AuditEntry.target_id == flag_id))).all()
        assert [(a.actor, a.action, a.reason) for a in audit] == [
            ("rita-reviewer", "flag.dismiss", "known eval harness")]


async def test_confirm_keeps_risk(
        api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]) -> None:
    flag_id, accounts = await _flag(sessions)
    done = await api.post(f"/flags/{flag_id}/review", json={"decision": "confirm"},
                          headers=REVIEWER)
    assert done.json()["status"] == "confirmed"
    async with sessions() as session:
        acct = await session.get(Account, accounts[0])
        assert acct is not None and acct.risk_score == 0.8


async def test_dismissing_a_campaign_serves_its_accounts_under_their_own_keys_again(
        api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]) -> None:
    dismissed, members = await _flag(sessions, kind="campaign", members=2)
    confirmed, others = await _flag(sessions, kind="campaign", members=2)
    async with sessions.begin() as session:  # as the detector left them when it flagged
        for flag_id, accounts in ((dismissed, members), (confirmed, others)):
            for account in accounts:
                row = await session.get(Account, account)
                assert row is not None
                row.watermark_identity = f"cohort:{flag_id}"
    for flag_id, decision in ((dismissed, "dismiss"), (confirmed, "confirm")):
        done = await api.post(f"/flags/{flag_id}/review", json={"decision": decision},
                              headers=REVIEWER)
        assert done.status_code == 200
    async with sessions() as session:
        identities = {a.id: a.watermark_identity for a in (await session.scalars(
            select(Account).where(Account.id.in_([*members, *others])))).all()}
        left = (await session.scalars(select(AuditEntry).where(
            AuditEntry.action == "watermark.cohort_leave"))).all()
    assert identities == {**dict.fromkeys(members), **dict.fromkeys(
        others, f"cohort:{confirmed}")}
    assert [(e.actor, e.target_id, sorted(e.details["account_ids"])) for e in left] == [
        ("rita-reviewer", f"cohort:{dismissed}", sorted(members))]
