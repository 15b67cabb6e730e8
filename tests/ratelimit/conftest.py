"""Rate-limit tests run against the real Redis on 127.0.0.1:6379, and — every test that takes
the ``redis`` fixture — once more against a real 3-primary Redis Cluster (``redis_cluster_url``):
the limits must be as exact there."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.metrics import Metrics
from gateway.ratelimit.redis_backend import RedisBackend
from gateway.redis_client import RedisClient, connect

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["single", "cluster"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[RedisClient]:
    url = REDIS_URL if request.param == "single" else request.getfixturevalue("redis_cluster_url")
    client = connect(url)
    await client.ping()  # fail, never skip, when Redis is down
    yield client
    await client.aclose()


@pytest.fixture
def redis_backend(redis: RedisClient, metrics: Metrics) -> RedisBackend:
    return RedisBackend(redis, metrics=metrics, prefix=f"test:{uuid.uuid4().hex[:8]}")
