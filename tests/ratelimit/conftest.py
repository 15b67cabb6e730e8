"""Rate-limit tests run against the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.ratelimit.redis_backend import RedisBackend

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    await client.ping()  # fail, never skip, when Redis is down
    yield client
    await client.aclose()


@pytest.fixture
def redis_backend(redis: Redis) -> RedisBackend:
    return RedisBackend(redis, prefix=f"test:{uuid.uuid4().hex[:8]}")
