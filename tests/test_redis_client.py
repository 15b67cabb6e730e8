"""One URL, one client: ``redis://`` is one Redis, ``redis+cluster://`` a Redis Cluster (seeds
comma-separated); the cluster client finds the rest from any seed that answers."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gateway.redis_client import _split_seeds, connect, is_cluster_url
from tests.support.servers import free_port


def test_the_scheme_says_which_client() -> None:
    assert isinstance(connect("redis://127.0.0.1:6379/0"), Redis)
    assert isinstance(connect("rediss://127.0.0.1:6379/0"), Redis)
    assert isinstance(connect("redis+cluster://127.0.0.1:7000"), RedisCluster)
    assert isinstance(connect("REDISS+CLUSTER://127.0.0.1:7000"), RedisCluster)
    assert is_cluster_url("redis+cluster://a:1") and not is_cluster_url("redis://a:1")


def test_cluster_seeds_and_credentials_are_split_from_the_url() -> None:
    first, others = _split_seeds("rediss+cluster://user:p%40ss@node-0:7000,node-1:7001,[::1]/0")
    assert urlsplit(first).scheme == "rediss"
    assert urlsplit(first).netloc == "user:p%40ss@node-0:7000"
    assert others == [("node-1", 7001), ("::1", 6379)]
    with pytest.raises(ValueError, match="at least one host"):
        _split_seeds("redis+cluster://")


def test_timeouts_reach_every_cluster_node() -> None:
    client = connect("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", timeout_s=0.25)
    assert isinstance(client, RedisCluster)
    nodes = client.nodes_manager.startup_nodes.values()
    assert {n.port for n in nodes} == {7000, 7001}
    assert all(n.connection_kwargs["socket_timeout"] == 0.25 for n in nodes)


async def test_any_answering_seed_finds_the_cluster(redis_cluster_url: str) -> None:
    live = redis_cluster_url.removeprefix("redis+cluster://")
    client = connect(f"redis+cluster://127.0.0.1:{free_port()},{live}")
    try:
        assert await client.ping()
        assert isinstance(client, RedisCluster) and len(client.get_primaries()) == 3
    finally:
        await client.aclose()
