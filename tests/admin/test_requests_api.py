"""An account's request records over the admin API: newest first, cursor pages, time window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.store.models import RequestRow
from tests.admin.conftest import VIEWER, Admin, assert_openai_error, new_account

START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


async def _insert(admin: Admin, account_id: str, count: int) -> None:
    async with admin.sessions() as session, session.begin():
        for i in range(count):
            session.add(RequestRow(
                request_id=f"req_{account_id[-4:]}_{i:02d}", account_id=account_id,
                route="/v1/chat/completions", method="POST", status_code=200, model="tiny",
                prompt_tokens=10 + i, completion_tokens=5, logprobs=i % 2 == 0,
                created_at=START + timedelta(seconds=i // 2),  # pairs share a timestamp
            ))


async def test_cursor_walks_every_request_once_newest_first(admin: Admin) -> None:
    account = await new_account(admin)
    other = await new_account(admin, "other")
    await _insert(admin, account["id"], 7)
    await _insert(admin, other["id"], 3)
    seen: list[dict[str, object]] = []
    params: dict[str, str | int] = {"limit": 3}
    while True:
        response = await admin.client.get(
            f"/accounts/{account['id']}/requests", params=params, headers=VIEWER
        )
        assert response.status_code == 200, response.text
        seen += response.json()["items"]
        if (cursor := response.json()["next_cursor"]) is None:
            break
        params["cursor"] = cursor
    suffix = account["id"][-4:]
    assert [r["request_id"] for r in seen] == [f"req_{suffix}_{i:02d}" for i in range(6, -1, -1)]
    assert {r["account_id"] for r in seen} == {account["id"]}
    newest = seen[0]
    assert newest["prompt_tokens"] == 16 and newest["logprobs"] is True
    assert newest["created_at"] == (START + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")


async def test_since_and_until_bound_the_window(admin: Admin) -> None:
    account = await new_account(admin)
    await _insert(admin, account["id"], 6)
    response = await admin.client.get(
        f"/accounts/{account['id']}/requests",
        params={"since": (START + timedelta(seconds=1)).isoformat(),
                "until": (START + timedelta(seconds=2)).isoformat()},
        headers=VIEWER,
    )
    suffix = account["id"][-4:]
    assert [r["request_id"] for r in response.json()["items"]] == [
        f"req_{suffix}_03", f"req_{suffix}_02"
    ]


async def test_bad_window_and_cursor_are_400s_naming_the_parameter(admin: Admin) -> None:
    account = await new_account(admin)
    path = f"/accounts/{account['id']}/requests"
    for params, param in (({"since": "yesterday"}, "since"), ({"cursor": "!!"}, "cursor")):
        response = await admin.client.get(path, params=params, headers=VIEWER)
        assert_openai_error(response, 400, param=param)
