"""The limiter's failure modes against a real Redis that goes away and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gateway.domain.limits import TierLimits
from gateway.metrics import Metrics
from gateway.ratelimit.backend import InProcessBackend
from gateway.ratelimit.limiter import AccountLimiter, FailureMode
from gateway.ratelimit.redis_backend import RedisBackend
from gateway.redis_client import RedisClient
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until_async

LIMITS = TierLimits(requests_per_minute=10, tokens_per_minute=100_000, tokens_per_day=10**7,
                    max_concurrent=100)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    async with TcpProxy("127.0.0.1", 6379) as running:
        yield running


def _limiter(redis: RedisClient, mode: FailureMode, metrics: Metrics | None = None,
             **options: float) -> AccountLimiter:
    import uuid

    metrics = metrics or Metrics(CollectorRegistry())
    return AccountLimiter(
        RedisBackend(redis, metrics=metrics, prefix=f"lim:{uuid.uuid4().hex[:8]}"),
        metrics=metrics, fallback=InProcessBackend(),
        failure_mode=mode, timeout_s=options.get("timeout_s", 0.5),
        replicas=int(options.get("replicas", 1)),
        retry_interval_s=options.get("retry_interval_s", 0.2),
    )


async def _admitted(limiter: AccountLimiter, count: int, account: str = "acct") -> int:
    results = [await limiter.admit(account, LIMITS, 0) for _ in range(count)]
    return sum(a.allowed for a in results)


async def test_fail_open_falls_back_with_the_limit_divided_by_replicas_and_says_so(
    proxy: TcpProxy, metrics: Metrics,
) -> None:
    redis = Redis(host=proxy.host, port=proxy.port)
    limiter = _limiter(redis, "fail_open", metrics, replicas=2)
    assert limiter.mode == "redis"
    proxy.cut()
    assert await _admitted(limiter, 8) == 5  # 10 per minute across 2 replicas
    assert limiter.mode == "fallback"
    assert metrics.registry.get_sample_value("gateway_ratelimit_fallback_active") == 1
    await redis.aclose()


async def test_fail_closed_refuses_with_a_503_while_redis_is_down(proxy: TcpProxy) -> None:
    redis = Redis(host=proxy.host, port=proxy.port)
    limiter = _limiter(redis, "fail_closed")
    proxy.cut()
    admission = await limiter.admit("acct", LIMITS, 0)
    assert not admission.allowed
    assert admission.error is not None
    assert (admission.error.status, admission.error.code) == (503, "rate_limiter_unavailable")
    await redis.aclose()


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
async def test_recovery_is_automatic_when_redis_returns(
    proxy: TcpProxy, mode: FailureMode, metrics: Metrics,
) -> None:
    redis = Redis(host=proxy.host, port=proxy.port)
    limiter = _limiter(redis, mode, metrics, retry_interval_s=0.1)
    assert (await limiter.admit("acct", LIMITS, 0)).allowed
    proxy.cut()
    await limiter.admit("acct", LIMITS, 0)
    assert limiter.degraded
    proxy.restore()
    await asyncio.sleep(0.15)
    admission = await limiter.admit("acct", LIMITS, 0)
    assert admission.allowed
    assert limiter.mode == "redis"
    assert metrics.registry.get_sample_value("gateway_ratelimit_fallback_active") == 0
    await redis.aclose()


async def test_a_limiter_that_gets_no_requests_still_leaves_the_fallback_when_redis_returns(
    proxy: TcpProxy, metrics: Metrics,
) -> None:
    """One worker of several trips during an outage and then gets no traffic (its clients'
    connections are on the other workers): it must not report the fallback for good."""
    redis = Redis(host=proxy.host, port=proxy.port)
    limiter = _limiter(redis, "fail_open", metrics, retry_interval_s=0.1)
    await limiter.start()
    try:
        proxy.cut()
        await limiter.admit("acct", LIMITS, 0)
        assert metrics.registry.get_sample_value("gateway_ratelimit_fallback_active") == 1
        await asyncio.sleep(0.5)
        assert limiter.degraded  # still down: the probes failed
        proxy.restore()

        async def recovered() -> bool:
            return not limiter.degraded

        await wait_until_async(recovered, timeout=10, what="the limiter to leave the fallback")
        assert limiter.mode == "redis"
        assert metrics.registry.get_sample_value("gateway_ratelimit_fallback_active") == 0
    finally:
        await limiter.stop()
        await redis.aclose()


BUSY_SCRIPT = """
local start = redis.call('TIME')
local t0 = tonumber(start[1]) * 1000000 + tonumber(start[2])
while true do
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000000 + tonumber(now[2]) - t0 > 300000 then return 1 end
end
"""


async def test_a_slow_redis_counts_as_down(redis: RedisClient) -> None:
    """On a cluster: the node that holds the account's slot is the one that stalls."""
    limiter = _limiter(redis, "fail_open", timeout_s=0.05)
    assert (await limiter.admit("acct", LIMITS, 0)).allowed
    assert limiter.mode == "redis"
    if isinstance(redis, RedisCluster):
        node = redis.get_node_from_key("any:{acct}")  # the slot of the account's hash tag
        blocker = Redis(host=node.host, port=node.port)
    else:
        blocker = Redis.from_url("redis://127.0.0.1:6379/0")
    stall = asyncio.create_task(blocker.eval(BUSY_SCRIPT, 0))  # Redis busy for 300 ms
    await asyncio.sleep(0.05)
    assert (await limiter.admit("acct", LIMITS, 0)).allowed
    assert limiter.mode == "fallback"
    await stall
    await blocker.aclose()


async def test_settle_releases_the_concurrency_slot(redis: RedisClient) -> None:
    limiter = _limiter(redis, "fail_open")
    one = TierLimits(requests_per_minute=100, tokens_per_minute=10**6, tokens_per_day=10**7,
                     max_concurrent=1)
    first = await limiter.admit("acct", one, 10)
    assert first.allowed
    assert not (await limiter.admit("acct", one, 10)).allowed
    await limiter.settle("acct", first, 5)
    assert (await limiter.admit("acct", one, 10)).allowed
