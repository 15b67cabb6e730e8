"""The shared window store on the real Redis — and on a real 3-primary Redis Cluster: bounded,
shared by replicas, one round trip; the campaign sweep reads every node."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import AsyncIterator

import numpy as np
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gateway.detect import features
from gateway.detect.redis_window_store import RedisWindowStore, _encode_sketch
from gateway.detect.risk import RiskState
from gateway.detect.window_store import MemoryWindowStore, Sketch
from gateway.redis_client import RedisClient, connect
from tests.detect.conftest import record


@pytest.fixture(params=["single", "cluster"])
async def redis(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[RedisClient]:
    url = redis_url if request.param == "single" else request.getfixturevalue("redis_cluster_url")
    client = connect(url)
    yield client
    await client.aclose()


async def _delete(redis: RedisClient, prefix: str) -> None:
    """Every key under ``prefix``, on every node of a cluster (SCAN visits each primary)."""
    for key in [k async for k in redis.scan_iter(match=f"{prefix}:*")]:
        await redis.delete(key)


def _item(i: int, account: str = "a") -> features.RequestFeatures:
    return features.extract(*record(f"prompt number {i}", account=account, rid=f"r{i}",
                                    ts=1e9 + i))


async def test_replicas_share_bounded_windows(redis: RedisClient) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    one = RedisWindowStore(redis, window=5, prefix=prefix)
    two = RedisWindowStore(redis, window=5, prefix=prefix)
    try:
        await one.exchange([("a", _item(i)) for i in range(4)], [])
        got = await two.exchange([("a", _item(i)) for i in range(4, 8)], ["a", "b"])
        assert [it.request_id for it in got.windows["a"]] == [f"r{i}" for i in range(3, 8)]
        assert got.windows["b"] == []
        assert got.risks["a"] == RiskState()
        # the coverage state and the read marker travel too: a replica that lost them would count
        # every re-run new and score every tail again
        await one.save({"a": RiskState(0.7, 123.0, 0.9, b"\x00\x01bloom", "req_9")}, {})
        again = await two.exchange([], ["a"])
        assert again.risks["a"] == RiskState(0.7, 123.0, 0.9, b"\x00\x01bloom", "req_9")
        ttl = await redis.ttl(f"{prefix}:w:{{a}}")
        assert 0 < ttl <= 7 * 86400
    finally:
        await _delete(redis, prefix)


async def test_sketches_expire_from_the_campaign_index(redis: RedisClient) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    store = RedisWindowStore(redis, window=5, prefix=prefix)
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
        await _delete(redis, prefix)


async def test_the_campaign_sweep_reads_sketches_of_many_accounts_from_every_shard(
    redis: RedisClient,
) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    store = RedisWindowStore(redis, window=5, prefix=prefix)
    sig = np.arange(16, dtype=np.uint32)
    accounts = [f"acct-{i}" for i in range(200)]
    try:
        await store.save({}, {a: Sketch(sig, 0.5, i, 0.1, 100.0 + i)
                              for i, a in enumerate(accounts)})
        got = await store.sketches(150.0)
        assert sorted(got) == sorted(accounts[50:])
        assert all(got[a].network == i for i, a in enumerate(accounts) if a in got)
        shards = {zlib.crc32(a.encode()) % store.sketch_shards for a in accounts}
        assert shards == set(range(store.sketch_shards))  # every shard holds some
        assert sorted(await store.sketches(0.0)) == sorted(accounts[50:])  # the rest pruned
    finally:
        await _delete(redis, prefix)


async def test_sketches_of_the_single_key_layout_are_still_read_then_pruned(
    redis: RedisClient,
) -> None:
    """An upgrade keeps the campaign state that earlier versions wrote to ``{prefix}:sketch`` and
    ``{prefix}:seen``; a newer sketch of the same account wins; stale ones go."""
    prefix = f"test:{uuid.uuid4().hex}"
    store = RedisWindowStore(redis, window=5, prefix=prefix)
    sig = np.arange(16, dtype=np.uint32)
    legacy = {"kept": Sketch(sig, 0.5, 1, 0.2, 200.0), "both": Sketch(sig, 0.5, 2, 0.3, 200.0),
              "stale": Sketch(sig, 0.5, 3, 0.4, 50.0)}
    try:
        await redis.hset(f"{prefix}:sketch", mapping={a: _encode_sketch(s)
                                                      for a, s in legacy.items()})
        await redis.zadd(f"{prefix}:seen", {a: s.ts for a, s in legacy.items()})
        await store.save({}, {"both": Sketch(sig, 0.9, 9, 0.9, 300.0)})
        got = await store.sketches(100.0)
        assert sorted(got) == ["both", "kept"]
        assert got["both"].network == 9 and got["kept"].network == 1
        assert await redis.hexists(f"{prefix}:sketch", "stale") == 0
        await store.sketches(1000.0)  # everything is older: the legacy pair empties and goes
        assert await redis.exists(f"{prefix}:sketch", f"{prefix}:seen") == 0
    finally:
        await _delete(redis, prefix)


async def test_on_a_cluster_keys_spread_over_every_node(redis_cluster_url: str) -> None:
    """Windows, risks and sketches of many accounts land on all three primaries (no node holds
    them all), and every account's window and risk share a slot."""
    cluster = connect(redis_cluster_url)
    assert isinstance(cluster, RedisCluster)
    prefix = f"test:{uuid.uuid4().hex}"
    store = RedisWindowStore(cluster, window=5, prefix=prefix)
    sig = np.arange(16, dtype=np.uint32)
    accounts = [f"acct-{i}" for i in range(60)]
    try:
        got = await store.exchange([(a, _item(i, a)) for i, a in enumerate(accounts)], accounts)
        assert all(len(got.windows[a]) == 1 for a in accounts)
        await store.save({a: RiskState(0.5, 1.0, 0.5) for a in accounts},
                         {a: Sketch(sig, 0.5, 1, 0.2, 100.0) for a in accounts})
        assert len(await store.sketches(0.0)) == len(accounts)
        primaries = cluster.get_primaries()
        assert len(primaries) == 3
        per_node = []
        for node in primaries:  # each node asked directly: what it holds itself
            async with Redis(host=node.host, port=node.port) as direct:
                per_node.append([k async for k in direct.scan_iter(match=f"{prefix}:*")])
        assert all(per_node), [len(k) for k in per_node]
        kinds = {k.decode().split(":")[2] for keys in per_node for k in keys}
        assert kinds == {"w", "r", "sketch", "seen"}
        for a in accounts:
            assert cluster.keyslot(store._w(a)) == cluster.keyslot(store._r(a))
    finally:
        await _delete(cluster, prefix)
        await cluster.aclose()


async def test_memory_store_is_bounded_in_accounts() -> None:
    store = MemoryWindowStore(window=3, max_accounts=2)
    await store.exchange([("a", _item(1)), ("b", _item(2)), ("c", _item(3))], [])
    got = await store.exchange([], ["a", "c"])
    assert got.windows["a"] == [] and len(got.windows["c"]) == 1
