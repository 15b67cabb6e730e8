"""Accounts over the admin API: create, read, list with filters and cursors, PATCH limits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from gateway.store.models import Account
from tests.admin.conftest import ADMIN, VIEWER, Admin, assert_openai_error, new_account

LIMIT_KEYS = {"requests_per_minute", "tokens_per_minute", "tokens_per_day", "max_concurrent"}


async def test_created_account_has_the_public_shape_and_tier_limits(admin: Admin) -> None:
    account = await new_account(admin, "acme", tier="free", reason="onboarding")
    assert {"id", "name", "status", "tier", "limits", "risk_score", "created_at"} <= set(account)
    assert account["name"] == "acme" and account["status"] == "active"
    assert account["tier"] == "free" and account["risk_score"] == 0.0
    assert account["watermark_identity"] == account["id"]  # its own key until a campaign flag
    assert account["limits"] == admin.settings.tiers["free"].model_dump()
    assert set(account["limits"]) == LIMIT_KEYS
    assert account["limit_overrides"] == {}
    fetched = await admin.client.get(f"/accounts/{account['id']}", headers=VIEWER)
    assert fetched.status_code == 200 and fetched.json() == account


async def test_new_accounts_default_to_the_default_tier(admin: Admin) -> None:
    account = await new_account(admin)
    assert account["tier"] == admin.settings.default_tier


async def test_creation_limits_override_the_tier(admin: Admin) -> None:
    account = await new_account(admin, limits={"requests_per_minute": 7})
    assert account["limits"]["requests_per_minute"] == 7
    tier = admin.settings.tiers[admin.settings.default_tier]
    assert account["limits"]["tokens_per_day"] == tier.tokens_per_day
    assert account["limit_overrides"] == {"requests_per_minute": 7}


async def test_unknown_tier_is_a_400_on_tier(admin: Admin) -> None:
    response = await admin.client.post(
        "/accounts", json={"name": "x", "tier": "platinum"}, headers=ADMIN
    )
    assert_openai_error(response, 400, param="tier")
    account = await new_account(admin)
    patched = await admin.client.patch(
        f"/accounts/{account['id']}", json={"tier": "platinum"}, headers=ADMIN
    )
    assert_openai_error(patched, 400, param="tier")


async def test_the_watermark_identity_is_not_writable_through_the_api(admin: Admin) -> None:
    """Only a campaign flag (and its dismissal) moves an account between keys: an admin call
    that would put an account in another's cohort, or take it out of its own, is refused."""
    account = await new_account(admin)
    for body in ({"watermark_identity": "cohort:flag_x"}, {"watermark_identity": None}):
        patched = await admin.client.patch(f"/accounts/{account['id']}", json=body,
                                           headers=ADMIN)
        assert_openai_error(patched, 400, param="watermark_identity")
    created = await admin.client.post(
        "/accounts", json={"name": "x", "watermark_identity": "cohort:flag_x"}, headers=ADMIN)
    assert_openai_error(created, 400, param="watermark_identity")
    shown = (await admin.client.get(f"/accounts/{account['id']}", headers=ADMIN)).json()
    assert shown["watermark_identity"] == account["id"]


async def test_unknown_account_is_an_openai_shaped_404(admin: Admin) -> None:
    for method, path in (
        ("GET", "/accounts/acct_nope"),
        ("PATCH", "/accounts/acct_nope"),
        ("GET", "/accounts/acct_nope/keys"),
        ("GET", "/accounts/acct_nope/requests"),
        ("GET", "/accounts/acct_nope/actions"),
    ):
        body = {"name": "n"} if method == "PATCH" else None
        response = await admin.client.request(method, path, json=body, headers=ADMIN)
        assert_openai_error(response, 404, code="account_not_found")


async def _walk(admin: Admin, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await admin.client.get("/accounts", params=query, headers=VIEWER)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next_cursor"}
        seen += [item["id"] for item in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            return seen


async def test_listing_walks_every_account_exactly_once_newest_first(admin: Admin) -> None:
    created = [(await new_account(admin, f"acct {i}"))["id"] for i in range(5)]
    seen = await _walk(admin, limit=2)
    assert seen == list(reversed(created))


async def test_listing_filters_by_status_tier_and_min_risk(admin: Admin) -> None:
    free = await new_account(admin, "free one", tier="free")
    risky = await new_account(admin, "risky", tier="enterprise")
    banned = await new_account(admin, "banned", tier="enterprise")
    async with admin.sessions() as session, session.begin():
        await session.execute(
            update(Account).where(Account.id == risky["id"]).values(risk_score=0.8)
        )
    await admin.client.post(
        f"/accounts/{banned['id']}/actions", json={"action": "ban", "reason": "abuse"},
        headers=ADMIN,
    )
    assert await _walk(admin, tier="free") == [free["id"]]
    assert await _walk(admin, min_risk=0.5) == [risky["id"]]
    assert await _walk(admin, status="banned") == [banned["id"]]
    assert await _walk(admin, tier="enterprise", status="active") == [risky["id"]]


async def test_listing_rejects_bad_filters_and_cursors(admin: Admin) -> None:
    for params, param in (
        ({"limit": 201}, "limit"),
        ({"limit": 0}, "limit"),
        ({"status": "deleted"}, "status"),
        ({"min_risk": "high"}, "min_risk"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ):
        response = await admin.client.get("/accounts", params=params, headers=VIEWER)
        assert_openai_error(response, 400, param=param)


async def test_patch_overrides_one_limit_and_keeps_the_rest_from_the_tier(admin: Admin) -> None:
    account = await new_account(admin, tier="free")
    response = await admin.client.patch(
        f"/accounts/{account['id']}",
        json={"limits": {"tokens_per_day": 999}, "reason": "pilot"}, headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    free = admin.settings.tiers["free"].model_dump()
    assert patched["limits"] == {**free, "tokens_per_day": 999}
    assert patched["limit_overrides"] == {"tokens_per_day": 999}
    assert admin.changed_accounts == [account["id"]]


async def test_patch_null_removes_one_override_and_null_limits_removes_all(admin: Admin) -> None:
    account = await new_account(
        admin, tier="free", limits={"tokens_per_day": 1, "max_concurrent": 9}
    )
    path = f"/accounts/{account['id']}"
    one = await admin.client.patch(path, json={"limits": {"tokens_per_day": None}}, headers=ADMIN)
    assert one.json()["limit_overrides"] == {"max_concurrent": 9}
    assert one.json()["limits"]["tokens_per_day"] == admin.settings.tiers["free"].tokens_per_day
    every = await admin.client.patch(path, json={"limits": None}, headers=ADMIN)
    assert every.json()["limit_overrides"] == {}
    assert every.json()["limits"] == admin.settings.tiers["free"].model_dump()


async def test_patch_name_and_tier_and_the_change_is_audited(admin: Admin) -> None:
    account = await new_account(admin, tier="free")
    response = await admin.client.patch(
        f"/accounts/{account['id']}",
        json={"name": "Acme Corp", "tier": "enterprise", "reason": "upgrade"}, headers=ADMIN,
    )
    assert response.json()["name"] == "Acme Corp"
    assert response.json()["limits"] == admin.settings.tiers["enterprise"].model_dump()
    audit = await admin.client.get(
        "/audit", params={"action": "account.update", "target_id": account["id"]}, headers=VIEWER
    )
    [entry] = audit.json()["items"]
    assert entry["actor"] == "bootstrap-admin" and entry["reason"] == "upgrade"
    assert entry["details"] == {
        "before": {"name": "acme", "tier": "free"},
        "after": {"name": "Acme Corp", "tier": "enterprise"},
    }


async def test_patch_validation_errors_name_the_field(admin: Admin) -> None:
    account = await new_account(admin)
    path = f"/accounts/{account['id']}"
    for body, param in (
        ({"limits": {"tokens_per_day": -1}}, "limits.tokens_per_day"),
        ({"limits": {"tokens_per_day": "lots"}}, "limits.tokens_per_day"),
        ({"limits": {"requests_per_hour": 5}}, "limits.requests_per_hour"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"tier": None}, "tier"),
        ({"colour": "red"}, "colour"),
    ):
        response = await admin.client.patch(path, json=body, headers=ADMIN)
        assert_openai_error(response, 400, param=param)
    empty = await admin.client.patch(path, json={}, headers=ADMIN)
    assert_openai_error(empty, 400)
    unchanged = await admin.client.get(path, headers=VIEWER)
    assert unchanged.json() == account
