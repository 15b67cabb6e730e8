"""The official openai SDK talks to the gateway as if it were the upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from gateway.modelserver.echo import reply_words
from tests.e2e.conftest import UPSTREAM_KEY, Stack, StackFactory
from tests.support.servers import free_port
from tests.support.waiting import wait_until

MESSAGES = [{"role": "user", "content": "Explain photosynthesis in one line"}]


def _wait_for_record(stack: Stack, account_id: str, request_id: str) -> dict:
    def find() -> dict | None:
        with stack.admin() as admin:
            items = admin.get(f"/admin/v1/accounts/{account_id}/requests").json()["items"]
        return next((r for r in items if r["request_id"] == request_id), None)

    return wait_until(find, timeout=15)


def test_chat_completion_round_trip_with_exact_usage_and_a_record(stack: Stack) -> None:
    account_id, key = stack.new_account()
    raw = stack.client(key).chat.completions.with_raw_response.create(
        model="echo-1", messages=MESSAGES, max_tokens=50)
    completion = raw.parse()
    expected = reply_words(MESSAGES[0]["content"], 50)
    assert completion.choices[0].message.content == " ".join(expected)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(expected)
    request_id = raw.headers["x-request-id"]
    record = _wait_for_record(stack, account_id, request_id)
    assert record["status_code"] == 200
    assert record["prompt_tokens"] == completion.usage.prompt_tokens
    assert record["completion_tokens"] == len(expected)
    assert record["max_tokens"] == 50
    assert record["route"] == "/v1/chat/completions"


def test_stream_passes_chunks_and_hides_the_usage_chunk_it_asked_for(stack: Stack) -> None:
    account_id, key = stack.new_account()
    with stack.client(key).chat.completions.with_streaming_response.create(
        model="echo-1", messages=MESSAGES, stream=True,
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(reply_words(MESSAGES[0]["content"], None))
    assert all(c.choices for c in chunks), "the injected usage-only chunk must be stripped"
    record = _wait_for_record(stack, account_id, request_id)
    assert record["stream"] is True
    assert record["completion_tokens"] == len(text.split())
    assert record["prompt_tokens"] == len(MESSAGES[0]["content"].split())
    assert record["ttfb_ms"] is not None


def test_stream_keeps_the_usage_chunk_when_the_client_asked(stack: Stack) -> None:
    _, key = stack.new_account()
    chunks = list(stack.client(key).chat.completions.create(
        model="echo-1", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(reply_words(MESSAGES[0]["content"], None))


def test_completions_embeddings_and_models(stack: Stack) -> None:
    _, key = stack.new_account()
    client = stack.client(key)
    completion = client.completions.create(model="echo-1", prompt="Once upon a time", max_tokens=5)
    assert completion.choices[0].text == " ".join(reply_words("Once upon a time", 5))
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="echo-1", prompt="Once upon a time", max_tokens=5, stream=True) if c.choices)
    assert streamed == completion.choices[0].text
    embedding = client.embeddings.create(model="echo-1", input=["a b", "c"])
    assert len(embedding.data) == 2
    assert embedding.usage.prompt_tokens == 3
    assert [m.id for m in client.models.list()] == ["echo-1"]


def test_a_bad_key_is_an_authentication_error(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        stack.client("sk-gw-not-a-real-key-000000000000000000").models.list()
    assert caught.value.code == "invalid_api_key"
    assert caught.value.response.headers["x-request-id"]
    missing = httpx.get(stack.base + "/v1/models")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"


def test_upstream_sees_its_own_credential_never_the_clients_key(stack: Stack) -> None:
    _, key = stack.new_account()
    stack.client(key).models.list()
    seen = stack.upstream.requests[-1]["headers"]
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert all(key not in value for value in seen.values())
    assert seen["x-request-id"].startswith("req_")


def test_a_suspended_account_is_refused_and_reinstated(stack: Stack) -> None:
    account_id, key = stack.new_account()
    client = stack.client(key)
    client.models.list()
    with stack.admin() as admin:
        admin.post(f"/admin/v1/accounts/{account_id}/actions",
                   json={"action": "suspend", "reason": "e2e"}).raise_for_status()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.models.list()
    assert caught.value.code == "account_suspended"
    with stack.admin() as admin:
        admin.post(f"/admin/v1/accounts/{account_id}/actions",
                   json={"action": "reinstate", "reason": "appeal"}).raise_for_status()
    assert client.models.list().data


def test_revocation_elsewhere_takes_effect_without_restart(stack: Stack) -> None:
    """A key revoked by another replica (here: the CLI, another process) stops working within
    the key-cache TTL."""
    import subprocess
    import sys

    _, key = stack.new_account()
    client = stack.client(key)
    client.models.list()
    with stack.admin() as admin:
        account_keys = admin.get(f"/admin/v1/accounts/{_account_of(stack, key)}/keys").json()
    key_id = account_keys["items"][0]["id"]
    settings = stack.app.runtime.settings
    env = {"GATEWAY_DATABASE_URL": settings.database_url, "GATEWAY_MODE": "local",
           "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "revoke", key_id],
                   env=env, check=True, capture_output=True)

    def refused() -> bool:
        try:
            client.models.list()
        except openai.AuthenticationError:
            return True
        return False

    wait_until(refused, timeout=5)


def _account_of(stack: Stack, key: str) -> str:
    principal = stack.app.runtime.keys._entries[stack.app.runtime.hash_key(key)].principal
    assert principal is not None
    return principal.account_id


def test_upstream_down_is_a_502_the_sdk_understands(make_stack: StackFactory) -> None:
    with make_stack(upstream_url=f"http://127.0.0.1:{free_port()}/v1") as down:
        account_id, key = down.new_account()
        with pytest.raises(openai.InternalServerError) as caught:
            down.client(key).chat.completions.create(model="echo-1", messages=MESSAGES)
        assert caught.value.status_code == 502
        assert caught.value.code == "upstream_unreachable"
        request_id = caught.value.response.headers["x-request-id"]
        record = _wait_for_record(down, account_id, request_id)
        assert record["status_code"] == 502


def test_upstream_timeout_is_a_504(make_stack: StackFactory) -> None:
    with make_stack(upstream_read_timeout_s=0.3) as slow:
        _, key = slow.new_account()
        with pytest.raises(openai.InternalServerError) as caught:
            slow.client(key).chat.completions.create(model="slow-2000", messages=MESSAGES)
        assert caught.value.status_code == 504
        assert caught.value.code == "upstream_timeout"


def test_bad_requests_get_openai_shaped_errors(stack: Stack) -> None:
    _, key = stack.new_account()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=stack.base, headers=headers) as http:
        malformed = http.post("/v1/chat/completions", content=b'{"model": "echo-1",')
        oversize = http.post("/v1/chat/completions", content=b"x" * (1024 * 1024 + 1))
        traversal = http.get("/v1/models/..%2f..%2fadmin%2fv1%2faccounts")
        missing = http.post("/v1/chat/completions", json={"model": "echo-1"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["param"] == "body"
    assert oversize.status_code == 413
    assert oversize.json()["error"]["code"] == "request_too_large"
    assert traversal.status_code == 400
    assert missing.json()["error"]["param"] == "messages"
    for response in (malformed, oversize, traversal, missing):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert response.headers["x-request-id"]


def test_client_disconnect_mid_stream_cancels_the_upstream(stack: Stack) -> None:
    account_id, key = stack.new_account()
    body = {"model": "drip-200", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=stack.base, headers=headers) as http, http.stream(
        "POST", "/v1/chat/completions", json=body
    ) as response:
        request_id = response.headers["x-request-id"]
        next(response.iter_raw())
    record = _wait_for_record(stack, account_id, request_id)
    assert record["status_code"] == 499
    assert record["error_code"] == "client_disconnected"
    upstream_request = _upstream_request(stack, request_id)
    wait_until(lambda: upstream_request["finished"], timeout=5)
    assert not upstream_request["completed"], "the upstream kept streaming to nobody"


def test_stream_is_relayed_while_the_upstream_is_still_generating(stack: Stack) -> None:
    _, key = stack.new_account()
    body = {"model": "drip-100", "messages": MESSAGES, "stream": True, "max_tokens": 10}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=stack.base, headers=headers) as http, http.stream(
        "POST", "/v1/chat/completions", json=body
    ) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        upstream_request = _upstream_request(stack, response.headers["x-request-id"])
        assert not upstream_request["completed"], "the gateway buffered the stream"
        rest = b"".join(chunks)
    assert first.startswith(b"data: ")
    assert rest.endswith(b"data: [DONE]\n\n")
    assert upstream_request["completed"]


def _upstream_request(stack: Stack, request_id: str) -> dict:
    requests = stack.upstream.requests
    return next(r for r in requests if r["headers"].get("x-request-id") == request_id)
