"""Hostile input never makes the admin API answer 500: each refusal is an OpenAI-shaped 4xx.

Forged cursors, bounds beyond the UTC range, NUL and lone surrogates, out-of-range integers were
unhandled exceptions (500s whose tracebacks quoted the input into the logs) on PostgreSQL, SQLite
or both. The rest pin down the strictness that keeps the API to its OpenAPI document, which the
fuzzer (test_fuzz_admin.py) holds it to: malformed ids, unknown or repeated query parameters,
oversized or undecodable bodies, an honest ``Allow`` header.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.admin import AdminDeps
from gateway.auth.admin_tokens import AdminTokens
from gateway.metrics import Metrics
from gateway.store import flags as flag_store
from gateway.store import repository as repo
from gateway.store.models import RequestRow
from tests.admin.conftest import (
    ADMIN,
    REVIEWER,
    VIEWER,
    Admin,
    assert_openai_error,
    build_admin_app,
    make_settings,
    new_account,
)


def forge(raw: str) -> str:
    """A cursor in the API's own encoding (urlsafe base64 of JSON text) around ``raw``."""
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def forge_json(value: Any) -> str:
    return forge(json.dumps(value))


LISTS = ["/accounts", "/accounts/{id}/actions", "/accounts/{id}/requests", "/audit", "/flags"]
STAMP = "2024-01-01T00:00:00+00:00"
FORGED_CURSORS = {
    "int-beyond-bigint": forge_json([10**20]),
    "negative-id": forge_json([-1]),
    "zero-id": forge_json([0]),
    "float": forge_json([1.5]),
    "bool": forge_json([True]),
    "null": forge_json([None]),
    "object": forge_json({"id": 1}),
    "empty-list": forge_json([]),
    "stamp-overflows-utc-late": forge_json(["9999-12-31T23:59:59-14:00", "acct_x"]),
    "stamp-overflows-utc-early": forge_json(["0001-01-01T00:00:00+14:00", "acct_x"]),
    "naive-stamp": forge_json(["2024-01-01T00:00:00", "acct_x"]),
    "not-a-stamp": forge_json(["yesterday", "acct_x"]),
    "nul-in-id": forge_json([STAMP, "acct\x00"]),
    "lone-surrogate-in-id": forge('["' + STAMP + '", "\\ud800"]'),
    "huge-id": forge_json([STAMP, "a" * 5000]),
    "deeply-nested": forge("[" * 3000 + "]" * 3000),
    "thousands-of-digits": forge("[" + "9" * 5000 + "]"),
    "not-base64": "%%%",
    "not-ascii": "é",
    "not-utf8": base64.urlsafe_b64encode(b"\xff\xfe[1]").decode(),
    "very-long": "A" * 20000,
}


async def _flag(sessions: async_sessionmaker[AsyncSession], account_id: str) -> str:
    async with sessions.begin() as session:
        flag = await flag_store.create_flag(
            session, kind="account", account_ids=[account_id], score=0.9, model_version="m",
            reasons=["r"], evidence={"request_ids": []},
        )
        return flag.id


async def _request_rows(sessions: async_sessionmaker[AsyncSession], account_id: str) -> None:
    async with sessions.begin() as session:
        for i in range(2):
            session.add(RequestRow(
                request_id=f"req_{account_id[-6:]}_{i}", account_id=account_id,
                route="/v1/models", method="GET", status_code=200,
                created_at=datetime(2024, 1, 1, i, tzinfo=UTC),
            ))


@pytest.fixture
async def populated(admin: Admin) -> dict[str, str]:
    """Two items in every list: accounts, actions, requests, audit entries and flags."""
    account = (await new_account(admin, "first"))["id"]
    await new_account(admin, "second")
    for _ in range(2):
        await admin.client.post(f"/accounts/{account}/actions",
                                json={"action": "warn", "reason": "r"}, headers=REVIEWER)
    await _request_rows(admin.sessions, account)
    for _ in range(2):
        await _flag(admin.sessions, account)
    key = (await admin.client.post(f"/accounts/{account}/keys", headers=ADMIN)).json()["id"]
    return {"account": account, "key": key, "flag": await _flag(admin.sessions, account)}


# --- cursors -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LISTS)
async def test_a_forged_cursor_is_400_invalid_cursor_on_every_list(
    admin: Admin, populated: dict[str, str], path: str
) -> None:
    url = path.format(id=populated["account"])
    for name, cursor in FORGED_CURSORS.items():
        response = await admin.client.get(url, params={"cursor": cursor}, headers=VIEWER)
        error = assert_openai_error(response, 400, param="cursor", code="invalid_cursor")
        assert cursor[:20] not in error["message"], name


async def test_a_cursor_from_one_list_is_refused_by_every_other(
    admin: Admin, populated: dict[str, str]
) -> None:
    urls = [path.format(id=populated["account"]) for path in LISTS]
    cursors = {}
    for url in urls:
        page = (await admin.client.get(url, params={"limit": 1}, headers=VIEWER)).json()
        assert page["next_cursor"], url
        cursors[url] = page["next_cursor"]
    for url in urls:
        for origin, cursor in cursors.items():
            response = await admin.client.get(url, params={"cursor": cursor}, headers=VIEWER)
            if origin == url:
                assert response.status_code == 200, (url, response.text)
            else:
                assert_openai_error(response, 400, param="cursor", code="invalid_cursor")


# --- datetimes -----------------------------------------------------------------------------


@pytest.mark.parametrize(("since", "until", "count"), [
    ("9999-12-31T23:59:59-14:00", None, 0),  # after datetime.max in UTC: nothing is that late
    (None, "9999-12-31T23:59:59-14:00", 2),
    ("0001-01-01T00:00:00+14:00", None, 2),  # before datetime.min in UTC: everything is later
    (None, "0001-01-01T00:00:00+14:00", 0),
    ("0001-01-01T00:00:00", "9999-12-31T23:59:59.999999", 2),  # naive = UTC, the whole range
    ("2024-01-01T01:00:00+00:00", None, 1),
    ("2024-01-01T02:00:00+01:00", None, 1),  # 01:00 UTC
])
async def test_a_bound_beyond_the_utc_range_is_clamped_to_it(
    admin: Admin, populated: dict[str, str], since: str | None, until: str | None, count: int
) -> None:
    """Every valid RFC 3339 date-time is accepted: the rows stored all lie within the range of
    UTC datetimes, so a bound beyond it selects what the range's end selects."""
    params = {k: v for k, v in {"since": since, "until": until}.items() if v is not None}
    url = f"/accounts/{populated['account']}/requests"
    response = await admin.client.get(url, params=params, headers=VIEWER)
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == count


@pytest.mark.parametrize("value", ["10000-01-01T00:00:00Z", "2024-13-01T00:00:00Z", "soon"])
async def test_a_bound_that_is_no_datetime_is_400_naming_it(
    admin: Admin, populated: dict[str, str], value: str
) -> None:
    url = f"/accounts/{populated['account']}/requests"
    response = await admin.client.get(url, params={"since": value}, headers=VIEWER)
    error = assert_openai_error(response, 400, param="since", code="invalid_value")
    assert value not in error["message"]


# --- strings -------------------------------------------------------------------------------

# (method, path, headers, json body or query params with "?" where the hostile text goes, param)
STRING_INPUTS: list[tuple[str, str, dict[str, str], dict[str, Any], str]] = [
    ("POST", "/accounts", ADMIN, {"json": {"name": "?"}}, "name"),
    ("POST", "/accounts", ADMIN, {"json": {"name": "n", "reason": "?"}}, "reason"),
    ("POST", "/accounts", ADMIN, {"json": {"name": "n", "tier": "?"}}, "tier"),
    ("PATCH", "/accounts/{account}", ADMIN, {"json": {"name": "?"}}, "name"),
    ("PATCH", "/accounts/{account}", ADMIN, {"json": {"name": "n", "reason": "?"}}, "reason"),
    ("PATCH", "/accounts/{account}", ADMIN, {"json": {"tier": "?"}}, "tier"),
    ("POST", "/accounts/{account}/keys", ADMIN, {"json": {"reason": "?"}}, "reason"),
    ("POST", "/accounts/{account}/actions", REVIEWER,
     {"json": {"action": "warn", "reason": "?"}}, "reason"),
    ("POST", "/flags/{flag}/review", REVIEWER,
     {"json": {"decision": "dismiss", "note": "?"}}, "note"),
    ("DELETE", "/keys/{key}", ADMIN, {"params": {"reason": "?"}}, "reason"),
    ("GET", "/accounts", VIEWER, {"params": {"tier": "?"}}, "tier"),
    ("GET", "/audit", VIEWER, {"params": {"actor": "?"}}, "actor"),
    ("GET", "/audit", VIEWER, {"params": {"action": "?"}}, "action"),
    ("GET", "/audit", VIEWER, {"params": {"target_type": "?"}}, "target_type"),
    ("GET", "/audit", VIEWER, {"params": {"target_id": "?"}}, "target_id"),
    ("GET", "/flags", VIEWER, {"params": {"account_id": "?"}}, "account_id"),
]


def _fill(template: dict[str, Any], text: str) -> dict[str, Any]:
    return {where: {k: (text if v == "?" else v) for k, v in values.items()}
            for where, values in template.items()}


def _case_id(case: tuple[str, str, dict[str, str], dict[str, Any], str]) -> str:
    return f"{case[0]} {case[1]} {case[4]}"


async def _send_text(
    admin: Admin, ids: dict[str, str], case: tuple[Any, ...], text: str
) -> httpx.Response:
    """The case's request with ``text`` in its hostile slot; JSON is serialised here, since
    httpx refuses to encode a lone surrogate (JSON escapes it: ``"\\ud800"``)."""
    method, path, headers, template, _ = case
    filled = _fill(template, text)
    if "json" in filled:
        filled = {"content": json.dumps(filled["json"]).encode()}
        headers = {**headers, "content-type": "application/json"}
    return await admin.client.request(method, path.format(**ids), headers=headers, **filled)


@pytest.mark.parametrize("case", STRING_INPUTS, ids=[_case_id(c) for c in STRING_INPUTS])
async def test_unstorable_text_is_refused_in_every_string_input(
    admin: Admin, populated: dict[str, str], case: tuple[Any, ...]
) -> None:
    """PostgreSQL text cannot hold NUL and no driver encodes half a surrogate pair; SQLite
    would store NUL, and the API refuses it alike. (A URL cannot carry a lone surrogate.)"""
    texts = ["a\x00b", "\x00"] + (["x\ud800y", "\udfff"] if "json" in case[3] else [])
    for text in texts:
        response = await _send_text(admin, populated, case, text)
        assert_openai_error(response, 400, param=case[4], code="invalid_value")


async def test_watermark_detection_examines_any_text_but_half_a_surrogate_pair(
    admin: Admin,
) -> None:
    """Detection stores nothing, and a suspect model's output may hold NUL bytes (a byte-level
    model emits them); only what UTF-8 cannot encode is refused."""
    for text in ["a\x00b" * 20, "\x00"]:
        ok = await admin.client.post("/watermark/detect", json={"text": text}, headers=VIEWER)
        assert ok.status_code == 200 and ok.json()["tokens_scored"] >= 0
    refused = await admin.client.post(
        "/watermark/detect", content=json.dumps({"text": "x\ud800y"}).encode(),
        headers={**VIEWER, "content-type": "application/json"})
    assert_openai_error(refused, 400, param="text", code="invalid_value")


@pytest.mark.parametrize(("params", "param"), [
    ({"actor": "a" * 201}, "actor"),
    ({"action": "a" * 65}, "action"),
    ({"target_type": "a" * 33}, "target_type"),
    ({"target_id": "a" * 65}, "target_id"),
])
async def test_audit_filters_are_bounded_by_their_columns(
    admin: Admin, params: dict[str, str], param: str
) -> None:
    response = await admin.client.get("/audit", params=params, headers=VIEWER)
    assert_openai_error(response, 400, param=param, code="invalid_value")


BAD_IDS = ["acct\x00", "a" * 65, "acct x", "acct..x", "é", "acct\ud800"]


@pytest.mark.parametrize(("method", "path", "param", "body"), [
    ("GET", "/accounts/{}", "account_id", None),
    ("PATCH", "/accounts/{}", "account_id", {"name": "n"}),
    ("GET", "/accounts/{}/keys", "account_id", None),
    ("POST", "/accounts/{}/keys", "account_id", {}),
    ("GET", "/accounts/{}/actions", "account_id", None),
    ("POST", "/accounts/{}/actions", "account_id", {"action": "warn", "reason": "r"}),
    ("GET", "/accounts/{}/requests", "account_id", None),
    ("DELETE", "/keys/{}", "key_id", None),
    ("GET", "/flags/{}", "flag_id", None),
    ("POST", "/flags/{}/review", "flag_id", {"decision": "dismiss"}),
])
async def test_a_malformed_path_id_is_400_naming_it_and_not_echoed(
    admin: Admin, method: str, path: str, param: str, body: Any
) -> None:
    for bad_id in BAD_IDS:
        url = path.format(quote(bad_id, safe="", errors="surrogatepass"))
        response = await admin.client.request(method, url, headers=ADMIN, json=body)
        error = assert_openai_error(response, 400, param=param, code="invalid_value")
        assert bad_id not in error["message"]


# --- numbers -------------------------------------------------------------------------------


async def test_a_limit_override_outside_its_range_is_400_naming_it(admin: Admin) -> None:
    """Overrides are JSON, not a column of their own: the API bounds them (0 to 10**12)."""
    account = await new_account(admin)
    for value in [-1, 10**12 + 1, 2**63, 10**30, 1.5, "5", True, [1]]:
        response = await admin.client.patch(
            f"/accounts/{account['id']}", json={"limits": {"tokens_per_day": value}},
            headers=ADMIN,
        )
        assert_openai_error(response, 400, param="limits.tokens_per_day", code="invalid_value")


@pytest.mark.parametrize(("path", "param", "values"), [
    ("/accounts", "limit", ["0", "201", "99999999999999999999999", "1e3", "-1", "ten"]),
    ("/audit", "limit", ["0", "201", "1.5"]),
    ("/flags", "limit", ["0", "-1"]),
    ("/accounts", "min_risk", ["nan", "inf", "-inf", "-0.5", "1e400"]),
    ("/accounts", "flagged", ["maybe", "2"]),
])
async def test_a_query_number_outside_its_range_is_400_naming_it(
    admin: Admin, path: str, param: str, values: list[str]
) -> None:
    for value in values:
        response = await admin.client.get(path, params={param: value}, headers=VIEWER)
        assert_openai_error(response, 400, param=param, code="invalid_value")


# --- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/accounts"),
    ("PATCH", "/accounts/{account}"),
    ("POST", "/accounts/{account}/keys"),
    ("POST", "/accounts/{account}/actions"),
    ("POST", "/flags/{flag}/review"),
    ("POST", "/watermark/detect"),
])
async def test_a_body_that_is_not_an_object_is_400(
    admin: Admin, populated: dict[str, str], method: str, path: str
) -> None:
    for body in [[], "name", 1, True, [{"name": "n"}], None]:
        response = await admin.client.request(
            method, path.format(**populated), content=json.dumps(body).encode(),
            headers={**ADMIN, "content-type": "application/json"},
        )
        if path.endswith("/keys") and body is None:  # the body is optional there
            assert response.status_code == 201, response.text
        else:
            assert_openai_error(response, 400)


async def test_a_body_over_two_mib_is_413_before_it_is_parsed(admin: Admin) -> None:
    huge = json.dumps({"name": "n", "reason": "r" * 3 * 1024 * 1024}).encode()  # over 2 MiB
    declared = await admin.client.post(
        "/accounts", content=huge, headers={**ADMIN, "content-type": "application/json"}
    )
    assert_openai_error(declared, 413, code="request_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it arrives
        for start in range(0, len(huge), 65536):
            yield huge[start:start + 65536]

    streamed = await admin.client.post(
        "/accounts", content=chunks(), headers={**ADMIN, "content-type": "application/json"}
    )
    assert_openai_error(streamed, 413, code="request_too_large")
    listed = await admin.client.get("/accounts", headers=VIEWER)
    assert listed.json()["items"] == []


# --- the last resort -----------------------------------------------------------------------


class _Broken:
    """A session factory whose every use fails, with user data in the exception."""

    def __call__(self) -> AsyncSession:
        raise RuntimeError("database exploded near name='Jane Doe s3cret'")

    def begin(self) -> AsyncSession:
        return self()


async def test_an_unexpected_error_is_a_bare_openai_500_and_logs_no_user_data(
    caplog: pytest.LogCaptureFixture, metrics: Metrics,
) -> None:
    settings = make_settings()
    deps = AdminDeps(sessions=cast(async_sessionmaker[AsyncSession], _Broken()),
                     settings=settings, tokens=AdminTokens.from_settings(settings),
                     metrics=metrics)
    transport = httpx.ASGITransport(app=build_admin_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw/admin/v1") as client:
        with caplog.at_level(logging.DEBUG):
            response = await client.get("/accounts", params={"tier": "s3cret"}, headers=VIEWER)
            created = await client.post("/accounts", json={"name": "s3cret"}, headers=ADMIN)
    for failed in (response, created):
        error = assert_openai_error(failed, 500)
        assert error == {"message": error["message"], "type": "server_error",
                         "param": None, "code": None}
        assert "s3cret" not in failed.text and "RuntimeError" not in failed.text
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway"))
    assert "RuntimeError" in logged and "in create_account" in logged  # what failed, and where
    assert "s3cret" not in logged


def test_openapi_names_the_id_patterns_and_string_bounds(admin: Admin) -> None:
    spec = admin.app.openapi()
    account_id = next(p for p in spec["paths"]["/admin/v1/accounts/{account_id}"]["get"]
                      ["parameters"] if p["name"] == "account_id")
    assert account_id["schema"]["pattern"]
    assert account_id["schema"]["maxLength"] == 64
    name = spec["components"]["schemas"]["AccountCreate"]["properties"]["name"]
    assert name["maxLength"] == 200


async def test_a_forged_cursor_is_refused_by_the_repository_itself(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        for cursor in FORGED_CURSORS.values():
            with pytest.raises(repo.InvalidCursor):
                await repo.list_audit(session, cursor=cursor)
            with pytest.raises(repo.InvalidCursor):
                await repo.list_accounts(session, cursor=cursor)


async def test_an_unknown_field_is_refused_without_being_echoed(admin: Admin) -> None:
    """The field name is the client's text: huge, or not even encodable as UTF-8."""
    for key, param in [("k" * 10_000, "<unknown field>"), ("evil<script>", "<unknown field>"),
                       ("\ud800", None)]:  # pydantic refuses that before naming a field
        body = json.dumps({"name": "n", key: 1}).encode()
        response = await admin.client.post(
            "/accounts", content=body, headers={**ADMIN, "content-type": "application/json"}
        )
        error = assert_openai_error(response, 400, param=param)
        assert key not in error["message"]
    nested = await admin.client.post(
        "/accounts", json={"name": "n", "limits": {"rpm": 1}}, headers=ADMIN)
    assert_openai_error(nested, 400, param="limits.rpm", code="invalid_value")


async def test_405_names_every_method_the_path_serves(admin: Admin) -> None:
    """Starlette names only the first route's methods; the admin API has one route per method."""
    for path, allowed in [("/accounts", "GET, POST"), ("/accounts/acct_x", "GET, PATCH"),
                          ("/keys/key_x", "DELETE"), ("/audit", "GET")]:
        response = await admin.client.request("PUT", path, headers=ADMIN)
        assert_openai_error(response, 405, code="method_not_allowed")
        assert response.headers["allow"] == allowed, path


def test_openapi_documents_400_errors_and_never_422(admin: Admin) -> None:
    spec = admin.app.openapi()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/ErrorResponse"), (method, path)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


async def test_a_query_parameter_given_twice_is_refused(admin: Admin) -> None:
    """Every admin parameter is single-valued; FastAPI would silently keep the last value."""
    response = await admin.client.get("/audit?actor=a&actor=b", headers=VIEWER)
    assert_openai_error(response, 400, param="actor", code="duplicate_parameter")
    hostile = await admin.client.get("/audit?%FF%FE=1&%FF%FE=2", headers=VIEWER)
    assert_openai_error(hostile, 400, param=None, code="duplicate_parameter")
    assert (await admin.client.get("/audit?actor=a&action=b", headers=VIEWER)).status_code == 200


async def test_a_body_that_does_not_decode_is_400_invalid_json(admin: Admin) -> None:
    headers = {**ADMIN, "content-type": "application/json"}
    for body in [b"\xff\xfe\x00", b'{"name": "\xff"}', b"[" * 100_000,
                 b'{"name": "n", "limits": {"max_concurrent": 1' + b"0" * 5000 + b"}}"]:
        response = await admin.client.post("/accounts", content=body, headers=headers)
        assert_openai_error(response, 400, code="invalid_json")


async def test_a_limit_written_as_an_integral_float_is_that_integer(admin: Admin) -> None:
    """JSON Schema's ``integer`` includes ``2.0``; so does the API."""
    account = await new_account(admin, limits={"max_concurrent": 2.0})
    assert account["limit_overrides"] == {"max_concurrent": 2}


async def test_a_query_parameter_the_operation_does_not_declare_is_refused(
    admin: Admin, populated: dict[str, str]
) -> None:
    """A misspelt filter must not silently list everything; an unknown name is not echoed."""
    account, key = populated["account"], populated["key"]
    for method, url, param in [
        ("GET", "/accounts?staus=banned", "staus"),
        ("GET", f"/accounts/{account}?limit=1", "limit"),
        ("DELETE", f"/keys/{key}?cursor=x", "cursor"),
        ("GET", "/accounts?=3", None),
        ("GET", "/audit?%00=1", None),
    ]:
        response = await admin.client.request(method, url, headers=ADMIN)
        assert_openai_error(response, 400, param=param, code="unknown_parameter")
    listed = await admin.client.get("/accounts?status=banned", headers=VIEWER)
    assert listed.status_code == 200
