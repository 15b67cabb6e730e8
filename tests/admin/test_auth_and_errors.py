"""Who may call what, and the one error shape every failure uses."""

from __future__ import annotations

import pytest

from tests.admin.conftest import (
    ADMIN,
    REVIEWER,
    VIEWER,
    Admin,
    assert_openai_error,
    new_account,
)

READS = [
    ("GET", "/accounts"),
    ("GET", "/accounts/{id}"),
    ("GET", "/accounts/{id}/keys"),
    ("GET", "/accounts/{id}/requests"),
    ("GET", "/accounts/{id}/actions"),
    ("GET", "/audit"),
]
ADMIN_ONLY = [
    ("POST", "/accounts", {"name": "new"}),
    ("PATCH", "/accounts/{id}", {"name": "renamed"}),
    ("POST", "/accounts/{id}/keys", {}),
    ("DELETE", "/keys/{key}", None),
]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-of-some-length"},
        {"Authorization": "Basic " + ADMIN["Authorization"].split()[1]},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
async def test_without_a_valid_admin_token_everything_is_401(
    admin: Admin, headers: dict[str, str]
) -> None:
    account = await new_account(admin)
    for method, path in [*READS, *((m, p) for m, p, _ in ADMIN_ONLY)]:
        url = path.format(id=account["id"], key="key_x")
        response = await admin.client.request(method, url, json={}, headers=headers)
        error = assert_openai_error(response, 401, code="invalid_admin_token")
        assert error["type"] == "authentication_error"
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [VIEWER, REVIEWER, ADMIN], ids=["viewer", "reviewer", "admin"])
async def test_every_role_may_read_everything(admin: Admin, headers: dict[str, str]) -> None:
    account = await new_account(admin)
    for method, path in READS:
        url = path.format(id=account["id"])
        response = await admin.client.request(method, url, headers=headers)
        assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize("headers", [VIEWER, REVIEWER], ids=["viewer", "reviewer"])
async def test_only_admins_manage_accounts_and_keys(admin: Admin, headers: dict[str, str]) -> None:
    account = await new_account(admin)
    key = (await admin.client.post(f"/accounts/{account['id']}/keys", headers=ADMIN)).json()
    for method, path, body in ADMIN_ONLY:
        url = path.format(id=account["id"], key=key["id"])
        response = await admin.client.request(method, url, json=body, headers=headers)
        error = assert_openai_error(response, 403, code="insufficient_role")
        assert error["type"] == "permission_error"
    listed = await admin.client.get(f"/accounts/{account['id']}/keys", headers=VIEWER)
    assert listed.json()["items"][0]["revoked_at"] is None
    assert (await admin.client.get("/accounts", headers=VIEWER)).json()["items"] == [account]
    assert admin.revoked_hashes == []


async def test_every_mutation_is_audited_with_actor_and_role(admin: Admin) -> None:
    account = await new_account(admin, reason="signup")
    key = (await admin.client.post(f"/accounts/{account['id']}/keys", headers=ADMIN)).json()
    await admin.client.patch(f"/accounts/{account['id']}", json={"name": "b"}, headers=ADMIN)
    await admin.client.delete(f"/keys/{key['id']}", headers=ADMIN)
    await admin.client.post(
        f"/accounts/{account['id']}/actions", json={"action": "warn", "reason": "be nice"},
        headers=REVIEWER,
    )
    audit = (await admin.client.get("/audit", headers=VIEWER)).json()
    assert [(e["action"], e["actor"], e["role"]) for e in audit["items"]] == [
        ("account.warn", "rita-reviewer", "reviewer"),
        ("key.revoke", "bootstrap-admin", "admin"),
        ("account.update", "bootstrap-admin", "admin"),
        ("key.create", "bootstrap-admin", "admin"),
        ("account.create", "bootstrap-admin", "admin"),
    ]
    assert audit["items"][-1]["reason"] == "signup"
    assert audit["items"][0]["reason"] == "be nice"


async def test_audit_pages_and_filters(admin: Admin) -> None:
    ids = [(await new_account(admin, f"a{i}"))["id"] for i in range(3)]
    first = (await admin.client.get("/audit", params={"limit": 2}, headers=VIEWER)).json()
    rest = (await admin.client.get(
        "/audit", params={"limit": 2, "cursor": first["next_cursor"]}, headers=VIEWER
    )).json()
    assert [e["target_id"] for e in first["items"] + rest["items"]] == ids[::-1]
    assert rest["next_cursor"] is None
    by_target = (await admin.client.get(
        "/audit", params={"target_type": "account", "target_id": ids[1]}, headers=VIEWER
    )).json()
    assert [e["target_id"] for e in by_target["items"]] == [ids[1]]
    by_actor = await admin.client.get("/audit", params={"actor": "nobody"}, headers=VIEWER)
    assert by_actor.json() == {"items": [], "next_cursor": None}
    bad = await admin.client.get("/audit", params={"cursor": "WyJ4Il0"}, headers=VIEWER)
    assert_openai_error(bad, 400, param="cursor", code="invalid_cursor")


async def test_malformed_json_and_missing_body_are_openai_shaped_400s(admin: Admin) -> None:
    headers = {**ADMIN, "content-type": "application/json"}
    broken = await admin.client.post("/accounts", content=b"{not json", headers=headers)
    assert_openai_error(broken, 400, code="invalid_json")
    missing = await admin.client.post("/accounts", headers=ADMIN)
    assert_openai_error(missing, 400)
    nameless = await admin.client.post("/accounts", json={"tier": "free"}, headers=ADMIN)
    assert_openai_error(nameless, 400, param="name")
    nested = await admin.client.post(
        "/accounts", json={"name": "x", "limits": {"max_concurrent": 1.5}}, headers=ADMIN
    )
    assert_openai_error(nested, 400, param="limits.max_concurrent")


async def test_unknown_routes_and_methods_are_openai_shaped(admin: Admin) -> None:
    unknown = await admin.client.get("/nothing-here", headers=ADMIN)
    assert_openai_error(unknown, 404, code="not_found")
    wrong_method = await admin.client.put("/accounts", headers=ADMIN)
    assert_openai_error(wrong_method, 405, code="method_not_allowed")
    assert wrong_method.headers["allow"]  # Starlette's Allow header is kept


def test_openapi_documents_every_admin_route(admin: Admin) -> None:
    spec = admin.app.openapi()
    paths = spec["paths"]
    for path, methods in {
        "/admin/v1/accounts": {"get", "post"},
        "/admin/v1/accounts/{account_id}": {"get", "patch"},
        "/admin/v1/accounts/{account_id}/keys": {"get", "post"},
        "/admin/v1/keys/{key_id}": {"delete"},
        "/admin/v1/accounts/{account_id}/requests": {"get"},
        "/admin/v1/accounts/{account_id}/actions": {"get", "post"},
        "/admin/v1/audit": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    created = paths["/admin/v1/accounts/{account_id}/keys"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("/KeyCreated")
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
