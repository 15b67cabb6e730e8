"""Rate limits as clients see them: OpenAI's headers and 429s, the SDK's retries, reconciliation,
concurrency slots released on every exit path, and Redis going away under both failure modes."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway.domain.limits import TierLimits, default_tiers
from tests.e2e.conftest import Stack, StackFactory
from tests.support.tcp_proxy import ThreadedTcpProxy
from tests.support.waiting import wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
MESSAGES = [{"role": "user", "content": "Tell me about rate limits"}]
DURATION = re.compile(r"^(\d+ms|\d+(\.\d+)?s|\d+m\d+(\.\d+)?s|\d+h\d+m\d+(\.\d+)?s)$")


def _tiers() -> dict[str, TierLimits]:
    tiers = default_tiers()
    tiers["fast"] = TierLimits(requests_per_minute=30, tokens_per_minute=10**6,
                               tokens_per_day=10**8, max_concurrent=50)
    tiers["small"] = TierLimits(requests_per_minute=1_000, tokens_per_minute=6_000,
                                tokens_per_day=10**8, max_concurrent=50)
    tiers["single"] = TierLimits(requests_per_minute=1_000, tokens_per_minute=10**6,
                                 tokens_per_day=10**8, max_concurrent=1)
    return tiers


@pytest.fixture(scope="module", params=["single", "cluster"])
def limited(make_stack: StackFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A gateway limiting in Redis: one server, and a real 3-primary Redis Cluster."""
    url = REDIS_URL if request.param == "single" else request.getfixturevalue("redis_cluster_url")
    with make_stack(redis_url=url, tiers=_tiers(), ratelimit_redis_timeout_s=0.5) as stack:
        yield stack


def _post(stack: Stack, key: str, **body: object) -> httpx.Response:
    payload = {"model": "echo-1", "messages": MESSAGES, **body}
    return httpx.post(stack.base + "/v1/chat/completions", json=payload,
                      headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_allowed_responses_carry_openai_rate_limit_headers(limited: Stack) -> None:
    _, key = limited.new_account(tier="fast")
    response = _post(limited, key)
    assert response.status_code == 200
    headers = response.headers
    assert headers["x-ratelimit-limit-requests"] == "30"
    assert headers["x-ratelimit-remaining-requests"] == "29"
    assert headers["x-ratelimit-limit-tokens"] == str(10**6)
    assert int(headers["x-ratelimit-remaining-tokens"]) < 10**6
    assert DURATION.match(headers["x-ratelimit-reset-requests"])
    assert DURATION.match(headers["x-ratelimit-reset-tokens"])


def test_a_429_is_openai_shaped_and_the_sdk_retry_succeeds_after_waiting(limited: Stack) -> None:
    _, key = limited.new_account(tier="fast")
    with httpx.Client(base_url=limited.base, headers={"Authorization": f"Bearer {key}"}) as http:
        for _ in range(200):
            response = http.get("/v1/models")
            if response.status_code == 429:
                break
        else:
            pytest.fail("the request limit was never reached")
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert "Limit 30" in error["message"]
    retry_ms = int(response.headers["retry-after-ms"])
    assert 0 < retry_ms <= 2000  # 30 per minute refills one request every 2 s
    assert int(response.headers["retry-after"]) >= retry_ms / 1000
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in response.headers

    client = openai.OpenAI(base_url=limited.base + "/v1", api_key=key, max_retries=3)
    raw = client.chat.completions.with_raw_response.create(model="echo-1", messages=MESSAGES)
    assert raw.http_response.status_code == 200
    assert raw.retries_taken >= 1


def test_a_request_that_can_never_fit_is_told_not_to_retry(limited: Stack) -> None:
    _, key = limited.new_account(tier="small")
    response = _post(limited, key, max_tokens=7_000)
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["type"] == "tokens"
    registry = limited.app.metrics.registry  # the app's own metrics, as /metrics exports them
    labels = {"limit": "tokens_per_minute", "outcome": "rejected"}
    before = registry.get_sample_value("gateway_ratelimit_decisions_total", labels) or 0.0
    client = openai.OpenAI(base_url=limited.base + "/v1", api_key=key, max_retries=2)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="echo-1", messages=MESSAGES, max_tokens=7_000)
    # the SDK believed x-should-retry: false
    assert registry.get_sample_value("gateway_ratelimit_decisions_total", labels) == before + 1


def test_streamed_usage_refunds_the_unused_reservation(limited: Stack) -> None:
    _, key = limited.new_account(tier="small")
    body = {"stream": True, "max_tokens": 2_000}
    first = _post(limited, key, **body)
    assert first.status_code == 200 and first.text.endswith("data: [DONE]\n\n")
    second = _post(limited, key, **body)
    # Each reserves ~2,000 tokens and uses ~30: had the first not been reconciled after its
    # stream ended, the second would see ~2,000 fewer tokens remaining, not about the same.
    remaining_first = int(first.headers["x-ratelimit-remaining-tokens"])
    remaining_second = int(second.headers["x-ratelimit-remaining-tokens"])
    assert remaining_second > remaining_first - 200


def test_concurrency_slots_are_released_on_disconnect_and_on_upstream_error(
    limited: Stack,
) -> None:
    _, key = limited.new_account(tier="single")
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "drip-200", "messages": MESSAGES, "stream": True}
    with httpx.Client(base_url=limited.base, headers=headers) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as streaming:
            chunks = streaming.iter_raw()
            next(chunks)
            busy = http.get("/v1/models")
            assert busy.status_code == 429  # the one slot is taken by the stream
        wait_until(lambda: http.get("/v1/models").status_code == 200, timeout=5)
        assert _post(limited, key, model="fail").status_code == 500
        assert http.get("/v1/models").status_code == 200


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_redis_stopped_mid_run(make_stack: StackFactory, mode: str) -> None:
    with ThreadedTcpProxy("127.0.0.1", 6379) as proxy, make_stack(
        redis_url=f"redis://127.0.0.1:{proxy.port}/0", ratelimit_failure_mode=mode,
        ratelimit_redis_timeout_s=0.2, ratelimit_retry_interval_s=0.2,
    ) as stack:
        _, key = stack.new_account()
        assert _post(stack, key).status_code == 200
        proxy.cut()
        during = _post(stack, key)
        ready = httpx.get(stack.base + "/readyz")
        metrics = httpx.get(stack.base + "/metrics").text
        if mode == "fail_open":
            assert during.status_code == 200
            assert ready.status_code == 200
            assert ready.json()["checks"]["ratelimit"] == "fallback"
            assert "gateway_ratelimit_fallback_active 1.0" in metrics
        else:
            assert during.status_code == 503
            assert during.json()["error"]["code"] == "rate_limiter_unavailable"
            assert ready.status_code == 503
        assert ready.json()["checks"]["redis"] is False
        proxy.restore()
        wait_until(lambda: _post(stack, key).status_code == 200
                   and httpx.get(stack.base + "/readyz").json()["checks"]["ratelimit"] == "redis",
                   timeout=10)
