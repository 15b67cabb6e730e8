"""One URL, one client: ``redis://`` is one Redis, ``redis+cluster://`` a Redis Cluster (seeds
comma-separated); the cluster client finds the rest from any seed that answers."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import DataError

from gateway.redis_client import PackedConnection, _split_seeds, connect, is_cluster_url
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


COMMANDS = [
    ("EVALSHA", "f" * 40, 2, "{acct}:r", "{acct}:t", 1.5, -3, 10**18, 0.1, 1e-7, 1e20, "é",
     b"\x00\xff"),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", "gw"),
    ("ZADD", "z", 1700000000.123456, "member"),
]


@pytest.mark.unit
@pytest.mark.parametrize("command", COMMANDS)
def test_the_c_packer_writes_the_bytes_redis_py_writes(command: tuple[object, ...]) -> None:
    ours = b"".join(PackedConnection().pack_command(*command))
    assert ours == b"".join(Connection().pack_command(*command))


@pytest.mark.unit
@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}])
def test_what_redis_py_refuses_to_encode_the_c_packer_refuses_too(value: object) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", value)
    with pytest.raises(DataError):
        PackedConnection().pack_command("SET", "k", value)


def test_only_plain_tcp_urls_get_the_c_packer() -> None:
    plain = connect("redis://127.0.0.1:6379/0")
    tls = connect("rediss://127.0.0.1:6379/0")
    assert isinstance(plain, Redis) and isinstance(tls, Redis)
    assert plain.connection_pool.connection_class is PackedConnection
    assert tls.connection_pool.connection_class is SSLConnection


@pytest.mark.integration
async def test_commands_round_trip_through_the_c_packer() -> None:
    client = connect("redis://127.0.0.1:6379/0")
    assert isinstance(client, Redis)
    try:
        key = f"gateway-test:packer:{free_port()}"
        assert await client.set(key, 2.5, ex=30)
        assert await client.incrbyfloat(key, 0.25) == 2.75
        assert await client.eval("return {KEYS[1], ARGV[1]}", 1, key, "é") == [
            key.encode(), "é".encode()]
        await client.delete(key)
    finally:
        await client.aclose()
