"""Fixtures for the admin API: an app around a migrated database (``sessions``, from
tests/conftest.py: PostgreSQL and SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.admin import AdminDeps, create_admin_router, install_error_handlers
from gateway.admin.flags import create_flags_router
from gateway.admin.quarantine import create_quarantine_router
from gateway.admin.watermark import create_watermark_router
from gateway.auth.admin_tokens import AdminTokens
from gateway.metrics import Metrics
from gateway.settings import AdminTokenConfig, Settings

ADMIN_TOKEN = "adm-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"
REVIEWER_TOKEN = "rev-" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4"
VIEWER_TOKEN = "vie-" + "Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6"

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REVIEWER = {"Authorization": f"Bearer {REVIEWER_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}


def make_settings() -> Settings:
    return Settings(
        mode="local",
        admin_token=ADMIN_TOKEN,
        admin_tokens=[
            AdminTokenConfig(name="rita-reviewer", token=REVIEWER_TOKEN, role="reviewer"),
            AdminTokenConfig(name="victor-viewer", token=VIEWER_TOKEN, role="viewer"),
        ],
    )


def build_admin_app(deps: AdminDeps) -> FastAPI:
    """Every ``/admin/v1`` router with the app's error handlers, as ``gateway.app`` wires them."""
    app = FastAPI(title="admin under test")
    install_error_handlers(app)
    app.include_router(create_admin_router(deps))
    app.include_router(create_flags_router(deps))
    app.include_router(create_watermark_router(deps))
    app.include_router(create_quarantine_router(deps))
    return app


@dataclass
class Admin:
    """The admin API under test, plus what its post-commit callbacks received."""

    app: FastAPI
    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    metrics: Metrics
    changed_accounts: list[str] = field(default_factory=list)
    revoked_hashes: list[str] = field(default_factory=list)


@pytest.fixture
async def admin(
    sessions: async_sessionmaker[AsyncSession], metrics: Metrics,
) -> AsyncIterator[Admin]:
    settings = make_settings()
    changed: list[str] = []
    revoked: list[str] = []
    deps = AdminDeps(
        sessions=sessions,
        settings=settings,
        tokens=AdminTokens.from_settings(settings),
        metrics=metrics,
        on_account_changed=changed.append,
        on_key_revoked=revoked.append,
    )
    app = build_admin_app(deps)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw/admin/v1") as client:
        yield Admin(app, client, sessions, settings, metrics, changed, revoked)


async def new_account(admin: Admin, name: str = "acme", **body: Any) -> dict[str, Any]:
    """Create an account through the API as the bootstrap admin; returns its JSON."""
    response = await admin.client.post("/accounts", json={"name": name, **body}, headers=ADMIN)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def assert_openai_error(
    response: httpx.Response, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The response is ``status`` with exactly OpenAI's error shape (and the given param/code)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fuzz: schemathesis fuzzing of the admin API (GATEWAY_FUZZ_EXAMPLES sizes it)"
    )
