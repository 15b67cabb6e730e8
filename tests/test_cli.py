"""The ``gateway`` CLI's account and key commands: audited changes, printed as JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import select

from gateway.cli import main
from gateway.store.db import create_engine, session_factory
from gateway.store.migrate import upgrade
from gateway.store.models import AuditEntry


@pytest.fixture
def database(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    upgrade(sqlite_url)
    monkeypatch.setenv("GATEWAY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEWAY_MODE", "local")
    return sqlite_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def audit_log(url: str) -> list[tuple[str, str, str | None]]:
    async def read() -> list[tuple[str, str, str | None]]:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
                return [(e.action, e.role, e.reason) for e in entries]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_account_and_key_commands_are_audited_as_the_cli_operator(
    database: str, capsys: pytest.CaptureFixture[str],
) -> None:
    account = run(capsys, "accounts", "create", "--name", "acme")
    assert (account["status"], account["tier"]) == ("active", "standard")
    key = run(capsys, "keys", "create", account["id"])
    assert key["key"].startswith("sk-gw-")
    acted = run(capsys, "accounts", "action", account["id"], "suspend", "--reason", "scraping")
    assert acted == {"account_id": account["id"], "action": "suspend", "status": "suspended"}
    assert run(capsys, "accounts", "list", "--status", "suspended")["id"] == account["id"]
    assert run(capsys, "keys", "revoke", key["id"])["revoked_at"] is not None
    assert audit_log(database) == [
        ("account.create", "admin", None), ("key.create", "admin", None),
        ("account.suspend", "admin", "scraping"), ("key.revoke", "admin", None),
    ]


def test_unknown_ids_and_tiers_fail_without_a_change(
    database: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["accounts", "create", "--name", "acme", "--tier", "platinum"]) == 1
    assert main(["accounts", "action", "acct_missing", "warn", "--reason", "r"]) == 1
    assert main(["keys", "create", "acct_missing"]) == 1
    assert main(["keys", "revoke", "key_missing"]) == 1
    assert "no account 'acct_missing'" in capsys.readouterr().err
    assert audit_log(database) == []


def test_importing_the_cli_does_not_import_the_application() -> None:
    """A spawned ``serve`` worker re-imports the main module before uvicorn's health-check
    responder starts in it: that import must stay cheap, or on a loaded node the supervisor
    kills every replacement worker before it can answer (see the module docstring)."""
    import subprocess
    import sys

    probe = ("import sys, gateway.cli; "
             "print(sorted(m for m in ('gateway.app', 'gateway.proxy', 'torch', 'onnxruntime') "
             "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.strip() == "[]"
