"""The shared window store on the real Redis: bounded, shared by replicas, one round trip."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest
from redis.asyncio import Redis

from gateway.detect import features
from gateway.detect.redis_store import RedisStore
from gateway.detect.risk import RiskState
from gateway.detect.store import MemoryStore, Sketch
from tests.detect.conftest import record


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _item(i: int, account: str = "a") -> features.RequestFeatures:
    return features.extract(*record(f"prompt number {i}", account=account, rid=f"r{i}",
                                    ts=1e9 + i))


async def test_replicas_share_bounded_windows(redis: Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    one = RedisStore(redis, window=5, prefix=prefix)
    two = RedisStore(redis, window=5, prefix=prefix)
    try:
        await one.exchange([("a", _item(i)) for i in range(4)], [])
        got = await two.exchange([("a", _item(i)) for i in range(4, 8)], ["a", "b"])
        assert [it.request_id for it in got.windows["a"]] == [f"r{i}" for i in range(3, 8)]
        assert got.windows["b"] == []
        assert got.risks["a"] == RiskState()
        await one.save({"a": RiskState(0.7, 123.0, 0.9)}, {})
        again = await two.exchange([], ["a"])
        assert again.risks["a"] == RiskState(0.7, 123.0, 0.9)
        ttl = await redis.ttl(f"{prefix}:w:{{a}}")
        assert 0 < ttl <= 7 * 86400
    finally:
        for key in await redis.keys(f"{prefix}:*"):
            await redis.delete(key)


async def test_sketches_expire_from_the_campaign_index(redis: Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    store = RedisStore(redis, window=5, prefix=prefix)
    sig = np.arange(16, dtype=np.uint32)
    try:
        await store.save({}, {"old": Sketch(sig, 0.5, 1, 0.2, 100.0),
                              "new": Sketch(sig, 0.9, 2, 0.8, 200.0)})
        got = await store.sketches(150.0)
        assert list(got) == ["new"]
        assert np.array_equal(got["new"].signature, sig) and got["new"].score == 0.8
        assert list(await store.sketches(0.0)) == ["new"]  # "old" was pruned
        assert await store.try_lock("campaign", 1000)
        assert not await store.try_lock("campaign", 1000)
    finally:
        for key in await redis.keys(f"{prefix}:*"):
            await redis.delete(key)


async def test_memory_store_is_bounded_in_accounts() -> None:
    store = MemoryStore(window=3, max_accounts=2)
    await store.exchange([("a", _item(1)), ("b", _item(2)), ("c", _item(3))], [])
    got = await store.exchange([], ["a", "c"])
    assert got.windows["a"] == [] and len(got.windows["c"]) == 1
