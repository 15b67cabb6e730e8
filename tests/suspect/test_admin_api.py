"""``POST /admin/v1/suspects`` end to end against a simulated suspect on a loopback port:
admin-only, the SSRF rules, the background run and its report, and the audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.admin import AdminDeps, create_admin_router, install_error_handlers
from gateway.admin.suspects import create_suspects_router
from gateway.auth.admin_tokens import AdminTokens
from gateway.metrics import Metrics
from gateway.settings import AdminTokenConfig, Settings
from gateway.store.models import AuditEntry
from gateway.watermark.keys import derive_key
from gateway.watermark.service import watermark_secrets
from tests.support.servers import serve_in_thread
from tests.suspect.support import suspect_app

ADMIN_TOKEN = "adm-" + "S1u2S3p4E5c6T7a8D9m0I1n2T3o4K5e6"
VIEWER_TOKEN = "vie-" + "S9u8S7p6E5c6T7v8I9e0W1e2R3t4O5k6"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
ADA_TOKEN = "ada-" + "N4m3dAdm1nT0k3nQ1w2E3r4T5y6U7i8O"
ADA = {"Authorization": f"Bearer {ADA_TOKEN}"}
SUSPECT_KEY = "sk-suspect-" + "Zx9Yw8Vu7Ts6"


@pytest.fixture
async def api(sessions: async_sessionmaker[AsyncSession],
              metrics: Metrics) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(mode="local", admin_token=ADMIN_TOKEN, admin_tokens=[
        AdminTokenConfig(name="vera-viewer", token=VIEWER_TOKEN, role="viewer"),
        AdminTokenConfig(name="ada-admin", token=ADA_TOKEN, role="admin")])
    deps = AdminDeps(sessions=sessions, settings=settings,
                     tokens=AdminTokens.from_settings(settings), metrics=metrics)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(create_admin_router(deps))
    app.include_router(create_suspects_router(deps))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw/admin/v1") as client:
        client.sessions = sessions  # type: ignore[attr-defined]
        yield client


Suspect = tuple[str, list[dict[str, str]], list[tuple[int, int]]]


@pytest.fixture(scope="module")
def harvester_suspect() -> Iterator[Suspect]:
    """A suspect whose text carries the keys the test puts in its list (a radioactive student
    of those accounts); records the headers it receives."""
    seen: list[dict[str, str]] = []
    keys: list[tuple[int, int]] = []
    with serve_in_thread(suspect_app(keys, 0.3, seen)) as url:
        yield url + "/v1", seen, keys


def body(url: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": url, "model": "student", "api_key": SUSPECT_KEY, "accounts": "all",
            "max_queries": 40, "queries_per_look": 10, "max_tokens": 150, **extra}


async def test_only_admins_may_start_a_run(api: httpx.AsyncClient) -> None:
    assert (await api.post("/suspects", json=body("https://h.example/v1"))).status_code == 401
    reply = await api.post("/suspects", json=body("https://h.example/v1"), headers=VIEWER)
    assert reply.status_code == 403


@pytest.mark.parametrize(("url", "extra"), [
    ("http://suspect.example/v1", {}),                       # http, not allowed explicitly
    ("http://127.0.0.1:9/v1", {"allow_http": True}),         # loopback without the power
    ("https://169.254.169.254/latest", {}),                  # cloud metadata
    ("https://user:pw@suspect.example/v1", {}),
])
async def test_targets_outside_the_rules_are_refused_before_any_request(
        api: httpx.AsyncClient, url: str, extra: dict[str, Any]) -> None:
    reply = await api.post("/suspects", json=body(url, **extra), headers=ADMIN)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "base_url"
    assert SUSPECT_KEY not in reply.text


async def test_a_run_attributes_the_harvester_and_is_audited_without_the_key(
        api: httpx.AsyncClient, harvester_suspect: Suspect) -> None:
    url, seen, keys = harvester_suspect
    ids = []
    for name in ("harvester", "bystander-1", "bystander-2"):
        created = await api.post("/accounts", json={"name": name}, headers=ADMIN)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    keys[:] = [derive_key(watermark_secrets(Settings(mode="local"))[0], ids[0])]
    reply = await api.post("/suspects", headers=ADA, json=body(
        url, allow_http=True, allow_private_network=True, reason="case 42"))
    assert reply.status_code == 202, reply.text
    job = reply.json()
    assert job["status"] == "running" and SUSPECT_KEY not in reply.text
    for _ in range(300):
        job = (await api.get(f"/suspects/{job['id']}", headers=VIEWER)).json()
        if job["status"] != "running":
            break
        await asyncio.sleep(0.1)
    assert job["status"] == "done", job
    report = job["report"]
    assert report["verdict"] == "attributed"
    assert [h["name"] for h in report["attributed"]] == [ids[0]]
    assert report["accounts_tested"] == len(ids) and report["queries"] <= 40
    assert seen and all(h.get("authorization") == f"Bearer {SUSPECT_KEY}" for h in seen)
    sessions = api.sessions  # type: ignore[attr-defined]
    async with sessions() as session:
        entries = (await session.scalars(select(AuditEntry).where(
            AuditEntry.target_id == job["id"]).order_by(AuditEntry.id))).all()
    assert [e.action for e in entries] == ["suspect.run", "suspect.report"]
    assert {e.actor for e in entries} == {"ada-admin"} and entries[0].reason == "case 42"
    assert entries[0].details and entries[0].details["allow_private_network"] is True
    assert all(SUSPECT_KEY not in str(e.details) for e in entries)
    assert entries[1].details and entries[1].details["report"]["verdict"] == "attributed"


async def test_an_unknown_run_is_404(api: httpx.AsyncClient) -> None:
    assert (await api.get("/suspects/sus_nothing", headers=VIEWER)).status_code == 404
