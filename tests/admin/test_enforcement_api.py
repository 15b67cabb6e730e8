"""Enforcement actions: status transitions, evidence records, audit entries, and who may act."""

from __future__ import annotations

import httpx
import pytest

from tests.admin.conftest import (
    ADMIN,
    REVIEWER,
    VIEWER,
    Admin,
    assert_openai_error,
    new_account,
)

TRANSITIONS = [
    ("throttle", "throttled"),
    ("suspend", "suspended"),
    ("ban", "banned"),
    ("warn", "active"),
]


def _actions_counted(admin: Admin, action: str) -> float:
    value = admin.metrics.registry.get_sample_value(
        "gateway_enforcement_actions_total", {"action": action})
    return value or 0.0


async def _act(
    admin: Admin, account_id: str, action: str, headers: dict[str, str], reason: str = "r"
) -> httpx.Response:
    return await admin.client.post(
        f"/accounts/{account_id}/actions", json={"action": action, "reason": reason},
        headers=headers,
    )


@pytest.mark.parametrize(("action", "status"), TRANSITIONS)
async def test_each_action_moves_the_account_and_is_recorded(
    admin: Admin, action: str, status: str
) -> None:
    account = await new_account(admin)
    before = _actions_counted(admin, action)
    response = await _act(admin, account["id"], action, ADMIN, reason="  scraping pattern  ")
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["account"]["status"] == status
    record = result["action"]
    assert record["action"] == action and record["reason"] == "scraping pattern"
    assert record["actor"] == "bootstrap-admin"
    assert (record["previous_status"], record["new_status"]) == ("active", status)
    assert _actions_counted(admin, action) == before + 1

    fetched = await admin.client.get(f"/accounts/{account['id']}", headers=VIEWER)
    assert fetched.json()["status"] == status
    history = await admin.client.get(f"/accounts/{account['id']}/actions", headers=VIEWER)
    assert [a["id"] for a in history.json()["items"]] == [record["id"]]
    audit = await admin.client.get(
        "/audit", params={"target_id": account["id"], "action": f"account.{action}"},
        headers=VIEWER,
    )
    [entry] = audit.json()["items"]
    assert (entry["actor"], entry["role"], entry["reason"]) == (
        "bootstrap-admin", "admin", "scraping pattern"
    )
    assert entry["details"]["new_status"] == status


async def test_status_changes_notify_the_cache_but_a_warning_does_not(admin: Admin) -> None:
    account = await new_account(admin)
    await _act(admin, account["id"], "warn", REVIEWER)
    assert admin.changed_accounts == []
    await _act(admin, account["id"], "suspend", REVIEWER)
    assert admin.changed_accounts == [account["id"]]


async def test_throttled_account_reports_the_throttled_limits(admin: Admin) -> None:
    account = await new_account(admin, tier="enterprise")
    result = (await _act(admin, account["id"], "throttle", REVIEWER)).json()
    assert result["account"]["tier"] == "enterprise"
    assert result["account"]["limits"] == admin.settings.tiers["throttled"].model_dump()


async def test_reinstate_returns_to_active_and_history_is_newest_first(admin: Admin) -> None:
    account = await new_account(admin)
    await _act(admin, account["id"], "suspend", REVIEWER, reason="probe")
    response = await _act(admin, account["id"], "reinstate", REVIEWER, reason="appeal upheld")
    assert response.json()["account"]["status"] == "active"
    assert response.json()["action"]["previous_status"] == "suspended"
    history = (await admin.client.get(
        f"/accounts/{account['id']}/actions", params={"limit": 1}, headers=VIEWER
    )).json()
    assert [a["action"] for a in history["items"]] == ["reinstate"]
    older = (await admin.client.get(
        f"/accounts/{account['id']}/actions", params={"cursor": history["next_cursor"]},
        headers=VIEWER,
    )).json()
    assert [a["action"] for a in older["items"]] == ["suspend"]
    assert older["next_cursor"] is None


async def test_reviewer_acts_but_may_not_ban(admin: Admin) -> None:
    account = await new_account(admin)
    for action in ("warn", "throttle", "suspend", "reinstate"):
        response = await _act(admin, account["id"], action, REVIEWER)
        assert response.status_code == 201, (action, response.text)
        assert response.json()["action"]["actor"] == "rita-reviewer"
    assert_openai_error(await _act(admin, account["id"], "ban", REVIEWER), 403)
    fetched = await admin.client.get(f"/accounts/{account['id']}", headers=VIEWER)
    assert fetched.json()["status"] == "active"


@pytest.mark.parametrize("action", ["reinstate", "throttle", "suspend"])
async def test_only_an_admin_changes_a_banned_accounts_status(admin: Admin, action: str) -> None:
    account = await new_account(admin)
    await _act(admin, account["id"], "ban", ADMIN)
    assert_openai_error(await _act(admin, account["id"], action, REVIEWER), 403)
    history = await admin.client.get(f"/accounts/{account['id']}/actions", headers=VIEWER)
    assert len(history.json()["items"]) == 1  # the refused action left no record
    assert (await _act(admin, account["id"], action, ADMIN)).status_code == 201


async def test_viewer_may_not_take_any_action(admin: Admin) -> None:
    account = await new_account(admin)
    for action in ("warn", "throttle", "suspend", "ban", "reinstate"):
        assert_openai_error(await _act(admin, account["id"], action, VIEWER), 403)


async def test_an_action_needs_a_known_action_and_a_real_reason(admin: Admin) -> None:
    account = await new_account(admin)
    path = f"/accounts/{account['id']}/actions"
    for body, param in (
        ({"action": "ban"}, "reason"),
        ({"action": "ban", "reason": ""}, "reason"),
        ({"action": "ban", "reason": "   "}, "reason"),
        ({"action": "delete", "reason": "x"}, "action"),
        ({"reason": "x"}, "action"),
    ):
        response = await admin.client.post(path, json=body, headers=ADMIN)
        assert_openai_error(response, 400, param=param)
    fetched = await admin.client.get(f"/accounts/{account['id']}", headers=VIEWER)
    assert fetched.json()["status"] == "active"


async def test_acting_on_an_unknown_account_is_404(admin: Admin) -> None:
    response = await _act(admin, "acct_nope", "warn", REVIEWER)
    assert_openai_error(response, 404, code="account_not_found")
