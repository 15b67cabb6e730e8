"""``GET /admin/v1/request-log/quarantine``: what the request log set aside, for admins to see.

Records are quarantined by the real writer on the real databases (PostgreSQL and SQLite); the
list shows who, why and when — never the prompt, nor the database's message quoting it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.admin import AdminDeps, install_error_handlers
from gateway.admin.quarantine import create_quarantine_router
from gateway.auth.admin_tokens import AdminTokens
from gateway.metrics import Metrics
from gateway.records import RequestRecord
from gateway.store.writer import RequestLogWriter
from tests.admin.conftest import ADMIN, VIEWER, assert_openai_error, make_settings
from tests.store.helpers import record

SECRET = "SECRET-PROMPT-TEXT"


@pytest.fixture
async def client(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], metrics: Metrics,
) -> AsyncIterator[httpx.AsyncClient]:
    spill_dir = str(tmp_path / "spill")
    settings = make_settings().model_copy(update={"request_log_spill_dir": spill_dir})
    deps = AdminDeps(sessions=sessions, settings=settings,
                     tokens=AdminTokens.from_settings(settings), metrics=metrics)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(create_quarantine_router(deps))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw/admin/v1") as http:
        yield http


def _refused(account_id: str) -> RequestRecord:
    bad = record(account_id=account_id, prompt_text=SECRET, model=SECRET)
    bad.route = None  # type: ignore[assignment]  # NOT NULL: the database refuses it
    return bad


async def _quarantine(engine: AsyncEngine, spill_dir: Path, records: list[RequestRecord]) -> None:
    """Submit the records through the real writer (the database refuses the bad ones)."""
    writer = RequestLogWriter(engine, metrics=Metrics(CollectorRegistry()), spill_dir=spill_dir,
                              replay_interval_s=3600)
    try:
        await writer.start()
        for item in records:
            writer.submit(item)
            await writer.flush()  # one at a time: their order in the quarantine is known
    finally:
        await writer.stop()


async def test_viewers_see_recent_quarantined_records_newest_first(
    client: httpx.AsyncClient, engine: AsyncEngine, tmp_path: Path
) -> None:
    refused = [_refused(f"acct-{i}") for i in range(3)]
    await _quarantine(engine, tmp_path / "spill", [*refused, record()])

    response = await client.get("/request-log/quarantine", headers=VIEWER)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    assert [item["request_id"] for item in body["items"]] == [
        r.request_id for r in reversed(refused)]
    assert [item["account_id"] for item in body["items"]] == ["acct-2", "acct-1", "acct-0"]
    for item in body["items"]:
        assert set(item) == {"request_id", "account_id", "reason", "quarantined_at"}
        assert item["reason"] in {"NotNullViolationError [23502]", "IntegrityError"}
        assert item["quarantined_at"].endswith("Z")
    assert SECRET not in response.text


async def test_limit_keeps_the_most_recent(
    client: httpx.AsyncClient, engine: AsyncEngine, tmp_path: Path
) -> None:
    refused = [_refused("acct-1") for _ in range(4)]
    await _quarantine(engine, tmp_path / "spill", refused)

    response = await client.get("/request-log/quarantine", params={"limit": 2}, headers=ADMIN)

    assert [i["request_id"] for i in response.json()["items"]] == [
        refused[3].request_id, refused[2].request_id]


async def test_an_empty_quarantine_is_an_empty_list(client: httpx.AsyncClient) -> None:
    response = await client.get("/request-log/quarantine", headers=VIEWER)
    assert response.json() == {"items": [], "next_cursor": None}


async def test_the_list_needs_an_admin_token_and_a_sane_limit(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/request-log/quarantine"), 401)
    assert_openai_error(
        await client.get("/request-log/quarantine", params={"limit": 0}, headers=VIEWER), 400,
        param="limit")
    assert_openai_error(
        await client.get("/request-log/quarantine", params={"limit": 10**30}, headers=VIEWER),
        400, param="limit")
