"""The limiter on a Redis Cluster whose node fails: the documented failure mode applies (fail_open:
the in-process fallback; fail_closed: 503 ``rate_limiter_unavailable``), and the limiter returns
to Redis by itself once the node is back. Each test runs a cluster of its own (one node of it is
killed and restarted)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio.cluster import RedisCluster

from gateway.domain.limits import TierLimits
from gateway.metrics import Metrics
from gateway.ratelimit.backend import InProcessBackend
from gateway.ratelimit.limiter import AccountLimiter, FailureMode
from gateway.ratelimit.redis_backend import RedisBackend
from gateway.redis_client import REDIS_ERRORS, RedisClient, connect
from gateway.redis_client import ping as redis_ping
from tests.support.redis_cluster import RedisClusterNodes, redis_cluster
from tests.support.servers import free_port
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration  # real redis-server processes

LIMITS = TierLimits(requests_per_minute=10, tokens_per_minute=100_000, tokens_per_day=10**7,
                    max_concurrent=100)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    with redis_cluster(tmp_path) as nodes:
        yield nodes


def _limiter(client: RedisClient, mode: FailureMode, metrics: Metrics) -> AccountLimiter:
    return AccountLimiter(
        RedisBackend(client, metrics=metrics),
        metrics=metrics, fallback=InProcessBackend(), failure_mode=mode, timeout_s=0.3,
        retry_interval_s=0.2,
    )


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
async def test_a_node_restart_applies_the_failure_mode_then_recovers(
    own_cluster: RedisClusterNodes, mode: FailureMode,
) -> None:
    metrics = Metrics(CollectorRegistry())
    client = connect(own_cluster.url, timeout_s=1.0)  # as the gateway builds it
    assert isinstance(client, RedisCluster)
    limiter = _limiter(client, mode, metrics)
    assert (await limiter.admit("acct", LIMITS, 0)).allowed
    assert limiter.mode == "redis"
    node = client.get_node_from_key("any:{acct}")  # the node that holds the account's slot
    own_cluster.stop_node(node.port, kill=True)

    down = await limiter.admit("acct", LIMITS, 0)
    if mode == "fail_open":
        assert down.allowed and limiter.mode == "fallback"
    else:
        assert not down.allowed and down.error is not None
        assert (down.error.status, down.error.code) == (503, "rate_limiter_unavailable")
    assert metrics.registry.get_sample_value("gateway_ratelimit_fallback_active") == 1

    own_cluster.start_node(node.port)
    own_cluster.wait_healthy()

    async def back_on_redis() -> bool:
        admission = await limiter.admit("acct", LIMITS, 0)
        return admission.allowed and limiter.mode == "redis"

    await wait_until_async(back_on_redis, interval=0.25, what="the limiter back on the cluster")
    assert metrics.registry.get_sample_value("gateway_ratelimit_fallback_active") == 0
    await limiter.stop()
    await client.aclose()


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
async def test_an_unreachable_cluster_applies_the_failure_mode(mode: FailureMode) -> None:
    """No seed node answers: the cluster client raises its own exception (not a RedisError),
    which must count as an outage all the same."""
    client = connect(f"redis+cluster://127.0.0.1:{free_port()}")
    limiter = _limiter(client, mode, Metrics(CollectorRegistry()))
    admission = await limiter.admit("acct", LIMITS, 0)
    assert admission.allowed == (mode == "fail_open")
    assert limiter.degraded
    await limiter.stop()
    await client.aclose()


async def test_readiness_asks_every_primary(own_cluster: RedisClusterNodes) -> None:
    """A cluster missing one primary is not ready (its slots are down), though the node a plain
    PING reaches may answer."""
    client = connect(own_cluster.url, timeout_s=1.0)
    assert isinstance(client, RedisCluster)
    assert await redis_ping(client)
    default = client.get_default_node()
    assert default is not None
    other = next(port for port in own_cluster.ports if port != default.port)
    own_cluster.stop_node(other, kill=True)

    assert await client.ping()  # the default node alone still answers
    with pytest.raises(REDIS_ERRORS):
        await redis_ping(client)  # /readyz turns this into "redis": false
    await client.aclose()
