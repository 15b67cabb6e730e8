"""The ``gateway`` CLI's account and key commands: audited changes, printed as JSON; declaring
or clearing an account's workload included (anything refused changes nothing)."""

from __future__ import annotations

import asyncio
import getpass
import json
from typing import Any

import pytest
from sqlalchemy import select

from gateway.cli import main
from gateway.domain.workloads import MAX_ALLOWANCE
from gateway.store.db import create_engine, session_factory
from gateway.store.migrate import upgrade
from gateway.store.models import Account, AuditEntry


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


# --- gateway accounts declare -----------------------------------------------------------------

EVALUATION = {"kind": "evaluation", "allowance": 500}


@pytest.fixture
def account(database: str, capsys: pytest.CaptureFixture[str]) -> str:
    account_id: str = run(capsys, "accounts", "create", "--name", "acme")["id"]
    return account_id


def stored_workload(url: str, account_id: str) -> Any:
    async def read() -> Any:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                return (await session.get_one(Account, account_id)).workload
        finally:
            await engine.dispose()

    return asyncio.run(read())


def workload_audit(url: str) -> list[tuple[str, str, str, str | None, str | None, Any]]:
    """(action, actor, role, target, reason, details) of every workload entry, oldest first."""
    async def read() -> list[tuple[str, str, str, str | None, str | None, Any]]:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                entries = await session.scalars(
                    select(AuditEntry).where(AuditEntry.action.like("account.workload_%"))
                    .order_by(AuditEntry.id))
                return [(e.action, e.actor, e.role, e.target_id, e.reason, e.details)
                        for e in entries]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_declare_prints_the_workload_and_audits_it_as_the_cli_operator(
    database: str, account: str, capsys: pytest.CaptureFixture[str],
) -> None:
    printed = run(capsys, "accounts", "declare", account, "--allowance", "500",
                  "--reason", "contract 42")
    assert printed == {"account_id": account, "workload": EVALUATION}
    assert stored_workload(database, account) == EVALUATION
    assert workload_audit(database) == [
        ("account.workload_declare", f"cli:{getpass.getuser()}", "admin", account,
         "contract 42", {"before": None, "after": EVALUATION}),
    ]


def test_the_kind_may_be_given_and_defaults_to_evaluation(
    database: str, account: str, capsys: pytest.CaptureFixture[str],
) -> None:
    printed = run(capsys, "accounts", "declare", account, "--kind", "evaluation",
                  "--allowance", str(MAX_ALLOWANCE), "--reason", "r")
    assert printed["workload"] == {"kind": "evaluation", "allowance": MAX_ALLOWANCE}


def test_clear_removes_the_declaration_and_is_idempotent(
    database: str, account: str, capsys: pytest.CaptureFixture[str],
) -> None:
    run(capsys, "accounts", "declare", account, "--allowance", "500", "--reason", "contract")
    cleared = run(capsys, "accounts", "declare", account, "--clear", "--reason", "ended")
    assert cleared == {"account_id": account, "workload": None}
    assert stored_workload(database, account) is None
    again = run(capsys, "accounts", "declare", account, "--clear", "--reason", "again")
    assert again == {"account_id": account, "workload": None}
    assert [(action, reason, details) for action, _, _, _, reason, details
            in workload_audit(database)] == [
        ("account.workload_declare", "contract", {"before": None, "after": EVALUATION}),
        ("account.workload_clear", "ended", {"before": EVALUATION, "after": None}),
        ("account.workload_clear", "again", {"before": None, "after": None}),
    ]


@pytest.mark.parametrize("flags", [
    ["--allowance", "5", "--clear"],
    [],
], ids=["both", "neither"])
def test_allowance_and_clear_are_one_or_the_other(
    database: str, account: str, capsys: pytest.CaptureFixture[str], flags: list[str],
) -> None:
    run(capsys, "accounts", "declare", account, "--allowance", "500", "--reason", "contract")
    with pytest.raises(SystemExit) as exited:
        main(["accounts", "declare", account, *flags, "--reason", "r"])
    assert exited.value.code not in (0, None)
    assert capsys.readouterr().out == ""
    assert stored_workload(database, account) == EVALUATION
    assert len(workload_audit(database)) == 1


@pytest.mark.parametrize("argv", [
    ["--allowance", "0"],
    ["--allowance", "-1"],
    ["--allowance", str(MAX_ALLOWANCE + 1)],
    ["--allowance", "70000"],
    ["--allowance", "ten"],
    ["--allowance", "1.5"],
    ["--allowance", "5", "--kind", "chat"],
    ["--allowance", "5", "--kind", ""],
], ids=["zero", "negative", "past-max", "70000", "word", "fraction", "kind-chat", "kind-empty"])
def test_argparse_refuses_a_bad_allowance_or_kind(
    database: str, account: str, capsys: pytest.CaptureFixture[str], argv: list[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["accounts", "declare", account, *argv, "--reason", "r"])
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err
    assert stored_workload(database, account) is None
    assert workload_audit(database) == []


def test_the_reason_is_required(
    database: str, account: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["accounts", "declare", account, "--allowance", "5"])
    assert exited.value.code == 2
    assert "--reason" in capsys.readouterr().err
    assert stored_workload(database, account) is None


@pytest.mark.parametrize("flags", [["--allowance", "5"], ["--clear"]], ids=["declare", "clear"])
def test_an_unknown_account_exits_1_without_a_change(
    database: str, capsys: pytest.CaptureFixture[str], flags: list[str],
) -> None:
    assert main(["accounts", "declare", "acct_missing", *flags, "--reason", "r"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no account 'acct_missing'" in captured.err
    assert workload_audit(database) == []
