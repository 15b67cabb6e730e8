"""Declared workloads over the admin API: ``PUT`` and ``DELETE /accounts/{id}/workload``.

Only an admin declares what an account's traffic cannot show (``gateway.domain.workloads``);
every declaration and clearing is audited with what it replaced, and anything but a well-formed
declaration is an OpenAI-shaped 400 that changes nothing.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from gateway.domain.workloads import MAX_ALLOWANCE
from tests.admin.conftest import (
    ADMIN,
    REVIEWER,
    VIEWER,
    Admin,
    assert_openai_error,
    new_account,
)

EVALUATION = {"kind": "evaluation", "allowance": 500, "reason": "contract 42: MMLU run"}


def _path(account_id: str) -> str:
    return f"/accounts/{account_id}/workload"


async def _declare(admin: Admin, account_id: str, body: Any = None,
                   headers: dict[str, str] = ADMIN) -> httpx.Response:
    return await admin.client.put(_path(account_id), json=EVALUATION if body is None else body,
                                  headers=headers)


async def _clear(admin: Admin, account_id: str, reason: str | None = "contract ended",
                 headers: dict[str, str] = ADMIN) -> httpx.Response:
    params = {} if reason is None else {"reason": reason}
    return await admin.client.delete(_path(account_id), params=params, headers=headers)


async def _shown(admin: Admin, account_id: str) -> dict[str, Any]:
    response = await admin.client.get(f"/accounts/{account_id}", headers=VIEWER)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def _audit(admin: Admin, account_id: str, action: str) -> list[dict[str, Any]]:
    response = await admin.client.get(
        "/audit", params={"action": action, "target_id": account_id}, headers=VIEWER)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _send_raw(admin: Admin, account_id: str, body: bytes) -> httpx.Response:
    return await admin.client.put(_path(account_id), content=body,
                                  headers={**ADMIN, "content-type": "application/json"})


# --- declaring, reading, clearing ------------------------------------------------------------


async def test_a_fresh_account_declares_no_workload(admin: Admin) -> None:
    account = await new_account(admin)
    assert account["workload"] is None
    assert (await _shown(admin, account["id"]))["workload"] is None


async def test_an_admin_declares_an_evaluation_workload(admin: Admin) -> None:
    account = await new_account(admin)
    response = await _declare(admin, account["id"])
    assert response.status_code == 200, response.text
    declared = response.json()
    assert declared["id"] == account["id"]
    assert declared["workload"] == {"kind": "evaluation", "allowance": 500}
    assert (await _shown(admin, account["id"]))["workload"] == declared["workload"]
    listed = (await admin.client.get("/accounts", headers=VIEWER)).json()["items"]
    assert [a["workload"] for a in listed] == [declared["workload"]]


@pytest.mark.parametrize("allowance", [1, MAX_ALLOWANCE])
async def test_the_allowance_may_be_anything_from_one_to_the_maximum(
    admin: Admin, allowance: int
) -> None:
    account = await new_account(admin)
    response = await _declare(admin, account["id"], {**EVALUATION, "allowance": allowance})
    assert response.status_code == 200, response.text
    assert response.json()["workload"] == {"kind": "evaluation", "allowance": allowance}


async def test_an_allowance_written_as_an_integral_float_is_that_integer(admin: Admin) -> None:
    """JSON Schema's ``integer`` includes ``500.0``; so does the API, as for limits."""
    account = await new_account(admin)
    response = await _declare(admin, account["id"], {**EVALUATION, "allowance": 500.0})
    assert response.status_code == 200, response.text
    assert response.json()["workload"] == {"kind": "evaluation", "allowance": 500}


async def test_a_second_declaration_replaces_the_first(admin: Admin) -> None:
    account = await new_account(admin)
    await _declare(admin, account["id"])
    again = await _declare(admin, account["id"], {**EVALUATION, "allowance": 20_000})
    assert again.json()["workload"] == {"kind": "evaluation", "allowance": 20_000}
    assert (await _shown(admin, account["id"]))["workload"]["allowance"] == 20_000


async def test_declaring_changes_nothing_else_about_the_account(admin: Admin) -> None:
    account = await new_account(admin, tier="free", limits={"max_concurrent": 3})
    declared = (await _declare(admin, account["id"])).json()
    ignored = {"workload", "updated_at"}
    assert {k: v for k, v in declared.items() if k not in ignored} == \
        {k: v for k, v in account.items() if k not in ignored}


async def test_delete_clears_the_declaration_and_is_idempotent(admin: Admin) -> None:
    account = await new_account(admin)
    await _declare(admin, account["id"])
    cleared = await _clear(admin, account["id"])
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["workload"] is None
    assert (await _shown(admin, account["id"]))["workload"] is None
    again = await _clear(admin, account["id"])
    assert again.status_code == 200, again.text
    assert again.json()["workload"] is None


async def test_clearing_an_account_that_declared_nothing_is_a_200(admin: Admin) -> None:
    account = await new_account(admin)
    response = await _clear(admin, account["id"])
    assert response.status_code == 200, response.text
    assert response.json()["workload"] is None


# --- the audit -------------------------------------------------------------------------------


async def test_declaring_and_clearing_are_audited_with_before_and_after(admin: Admin) -> None:
    account = await new_account(admin)
    await _declare(admin, account["id"])
    await _declare(admin, account["id"], {**EVALUATION, "allowance": 900, "reason": "rerun"})
    await _clear(admin, account["id"], reason="  contract ended  ")
    declared = await _audit(admin, account["id"], "account.workload_declare")
    assert [(e["actor"], e["role"], e["target_type"], e["reason"], e["details"])
            for e in declared] == [
        ("bootstrap-admin", "admin", "account", "rerun", {
            "before": {"kind": "evaluation", "allowance": 500},
            "after": {"kind": "evaluation", "allowance": 900}}),
        ("bootstrap-admin", "admin", "account", "contract 42: MMLU run", {
            "before": None, "after": {"kind": "evaluation", "allowance": 500}}),
    ]
    [cleared] = await _audit(admin, account["id"], "account.workload_clear")
    assert cleared["actor"] == "bootstrap-admin" and cleared["role"] == "admin"
    assert cleared["target_type"] == "account" and cleared["target_id"] == account["id"]
    assert cleared["reason"] == "contract ended"  # trimmed, like every reason
    assert cleared["details"] == {"before": {"kind": "evaluation", "allowance": 900},
                                  "after": None}


async def test_a_repeated_clear_is_audited_as_clearing_nothing(admin: Admin) -> None:
    account = await new_account(admin)
    await _clear(admin, account["id"], reason="first")
    await _clear(admin, account["id"], reason="second")
    entries = await _audit(admin, account["id"], "account.workload_clear")
    assert [(e["reason"], e["details"]) for e in entries] == [
        ("second", {"before": None, "after": None}),
        ("first", {"before": None, "after": None}),
    ]


# --- who may ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [VIEWER, REVIEWER], ids=["viewer", "reviewer"])
async def test_only_an_admin_declares_or_clears(admin: Admin, headers: dict[str, str]) -> None:
    account = await new_account(admin)
    await _declare(admin, account["id"])
    refused = [await _declare(admin, account["id"], {**EVALUATION, "allowance": 9},
                              headers=headers),
               await _clear(admin, account["id"], headers=headers)]
    for response in refused:
        error = assert_openai_error(response, 403, code="insufficient_role")
        assert error["type"] == "permission_error"
    assert (await _shown(admin, account["id"]))["workload"] == {"kind": "evaluation",
                                                               "allowance": 500}
    assert len(await _audit(admin, account["id"], "account.workload_declare")) == 1
    assert await _audit(admin, account["id"], "account.workload_clear") == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-of-some-length"}],
                         ids=["missing", "wrong"])
async def test_without_a_valid_token_it_is_401(admin: Admin, headers: dict[str, str]) -> None:
    account = await new_account(admin)
    for response in (await _declare(admin, account["id"], headers=headers),
                     await _clear(admin, account["id"], headers=headers)):
        error = assert_openai_error(response, 401, code="invalid_admin_token")
        assert error["type"] == "authentication_error"
    assert (await _shown(admin, account["id"]))["workload"] is None


# --- hostile bodies --------------------------------------------------------------------------

BAD_BODIES: list[tuple[str, Any, str | None]] = [
    ("allowance 0", {**EVALUATION, "allowance": 0}, "allowance"),
    ("allowance -1", {**EVALUATION, "allowance": -1}, "allowance"),
    ("allowance past the maximum", {**EVALUATION, "allowance": MAX_ALLOWANCE + 1}, "allowance"),
    ("allowance 10**30", {**EVALUATION, "allowance": 10**30}, "allowance"),
    ("allowance 1.5", {**EVALUATION, "allowance": 1.5}, "allowance"),
    ("allowance a string", {**EVALUATION, "allowance": "100"}, "allowance"),
    ("allowance true", {**EVALUATION, "allowance": True}, "allowance"),
    ("allowance false", {**EVALUATION, "allowance": False}, "allowance"),
    ("allowance null", {**EVALUATION, "allowance": None}, "allowance"),
    ("allowance a list", {**EVALUATION, "allowance": [1]}, "allowance"),
    ("allowance missing", {"kind": "evaluation", "reason": "r"}, "allowance"),
    ("kind chat", {**EVALUATION, "kind": "chat"}, "kind"),
    ("kind empty", {**EVALUATION, "kind": ""}, "kind"),
    ("kind capitalised", {**EVALUATION, "kind": "Evaluation"}, "kind"),
    ("kind null", {**EVALUATION, "kind": None}, "kind"),
    ("kind missing", {"allowance": 5, "reason": "r"}, "kind"),
    ("reason missing", {"kind": "evaluation", "allowance": 5}, "reason"),
    ("reason blank", {**EVALUATION, "reason": "   "}, "reason"),
    ("reason empty", {**EVALUATION, "reason": ""}, "reason"),
    ("reason null", {**EVALUATION, "reason": None}, "reason"),
    ("reason with NUL", {**EVALUATION, "reason": "a\x00b"}, "reason"),
    ("reason too long", {**EVALUATION, "reason": "r" * 2001}, "reason"),
    ("an expiry", {**EVALUATION, "expires": 1}, "expires"),
    ("another account", {**EVALUATION, "account_id": "acct_other"}, "account_id"),
    ("a list", [EVALUATION], None),
    ("a string", "evaluation", None),
    ("a number", 500, None),
    ("null", None, None),
    ("empty object", {}, "kind"),  # the first required field it lacks
]

@pytest.mark.parametrize(("body", "param"), [
    pytest.param(body, param, id=name) for name, body, param in BAD_BODIES
])
async def test_a_hostile_declaration_is_a_400_that_changes_nothing(
    admin: Admin, body: Any, param: str | None
) -> None:
    account = await new_account(admin)
    await _declare(admin, account["id"])
    response = await _send_raw(admin, account["id"], json.dumps(body).encode())
    error = assert_openai_error(response, 400, param=param)
    assert error["type"] == "invalid_request_error"
    assert (await _shown(admin, account["id"]))["workload"] == {"kind": "evaluation",
                                                               "allowance": 500}
    assert len(await _audit(admin, account["id"], "account.workload_declare")) == 1


async def test_a_missing_or_undecodable_body_is_a_400(admin: Admin) -> None:
    account = await new_account(admin)
    missing = await admin.client.put(_path(account["id"]), headers=ADMIN)
    assert_openai_error(missing, 400)
    broken = await _send_raw(admin, account["id"], b'{"kind": "evaluation", "allowance": 5')
    assert_openai_error(broken, 400, code="invalid_json")
    huge = await _send_raw(admin, account["id"],
                           b'{"kind": "evaluation", "reason": "r", "allowance": 1'
                           + b"0" * 5000 + b"}")
    assert_openai_error(huge, 400)
    assert (await _shown(admin, account["id"]))["workload"] is None


@pytest.mark.parametrize("reason", [None, "", "   ", "a\x00b"],
                         ids=["missing", "empty", "blank", "nul"])
async def test_clearing_needs_a_reason(admin: Admin, reason: str | None) -> None:
    account = await new_account(admin)
    await _declare(admin, account["id"])
    response = await _clear(admin, account["id"], reason=reason)
    assert_openai_error(response, 400, param="reason")
    assert (await _shown(admin, account["id"]))["workload"] == {"kind": "evaluation",
                                                               "allowance": 500}
    assert await _audit(admin, account["id"], "account.workload_clear") == []


async def test_a_query_parameter_the_routes_do_not_declare_is_refused(admin: Admin) -> None:
    account = await new_account(admin)
    put = await admin.client.put(f"{_path(account['id'])}?allowance=5", json=EVALUATION,
                                 headers=ADMIN)
    assert_openai_error(put, 400, param="allowance", code="unknown_parameter")
    twice = await admin.client.delete(f"{_path(account['id'])}?reason=a&reason=b",
                                      headers=ADMIN)
    assert_openai_error(twice, 400, param="reason", code="duplicate_parameter")
    assert (await _shown(admin, account["id"]))["workload"] is None


# --- which account ---------------------------------------------------------------------------


async def test_an_unknown_account_is_an_openai_shaped_404(admin: Admin) -> None:
    for response in (await _declare(admin, "acct_nope"), await _clear(admin, "acct_nope")):
        assert_openai_error(response, 404, code="account_not_found")
    audit = (await admin.client.get("/audit", params={"target_id": "acct_nope"},
                                    headers=VIEWER)).json()
    assert audit["items"] == []


BAD_IDS = ["acct\x00", "a" * 65, "acct x", "acct..x", "é", "acct\ud800"]


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=["nul", "too-long", "space", "dots", "non-ascii",
                                                 "surrogate"])
async def test_a_malformed_account_id_is_400_naming_it_and_not_echoed(
    admin: Admin, bad_id: str
) -> None:
    url = _path(quote(bad_id, safe="", errors="surrogatepass"))
    for response in (await admin.client.put(url, json=EVALUATION, headers=ADMIN),
                     await admin.client.delete(url, params={"reason": "r"}, headers=ADMIN)):
        error = assert_openai_error(response, 400, param="account_id", code="invalid_value")
        assert bad_id not in error["message"]


# --- not through PATCH -----------------------------------------------------------------------


@pytest.mark.parametrize("workload", [{"kind": "evaluation", "allowance": 5}, None],
                         ids=["declare", "clear"])
async def test_patch_cannot_set_or_clear_the_workload(admin: Admin, workload: Any) -> None:
    account = await new_account(admin)
    await _declare(admin, account["id"])
    before = await _shown(admin, account["id"])
    for body in ({"workload": workload}, {"name": "renamed", "workload": workload}):
        response = await admin.client.patch(f"/accounts/{account['id']}", json=body,
                                            headers=ADMIN)
        assert_openai_error(response, 400, param="workload")
    assert await _shown(admin, account["id"]) == before


async def test_an_account_cannot_be_created_with_a_workload(admin: Admin) -> None:
    response = await admin.client.post(
        "/accounts", json={"name": "n", "workload": {"kind": "evaluation", "allowance": 5}},
        headers=ADMIN)
    assert_openai_error(response, 400, param="workload")
    assert (await admin.client.get("/accounts", headers=VIEWER)).json()["items"] == []


async def test_the_workload_has_no_route_of_its_own_to_read_it(admin: Admin) -> None:
    """It is read with the account; the path serves PUT and DELETE alone."""
    account = await new_account(admin)
    for method in ("GET", "POST", "PATCH"):
        response = await admin.client.request(method, _path(account["id"]), headers=ADMIN)
        assert_openai_error(response, 405, code="method_not_allowed")
        assert response.headers["allow"] == "DELETE, PUT"


# --- the document ----------------------------------------------------------------------------


def test_openapi_documents_the_routes_and_the_bounds(admin: Admin) -> None:
    spec = admin.app.openapi()
    operations = spec["paths"]["/admin/v1/accounts/{account_id}/workload"]
    assert set(operations) == {"put", "delete"}
    body = spec["components"]["schemas"]["WorkloadIn"]
    assert set(body["required"]) == {"kind", "allowance", "reason"}
    assert body["additionalProperties"] is False
    allowance = body["properties"]["allowance"]
    assert (allowance["minimum"], allowance["maximum"]) == (1, MAX_ALLOWANCE)
    reason = next(p for p in operations["delete"]["parameters"] if p["name"] == "reason")
    assert reason["in"] == "query" and reason["required"] is True
