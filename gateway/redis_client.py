"""The one place a Redis URL becomes a client: a single Redis, or a Redis Cluster.

``GATEWAY_REDIS_URL`` (and ``GATEWAY_MODELSERVER_REDIS_URL``) name either

- one Redis server (or a primary behind a failover proxy): ``redis://[[user]:password@]host:port/db``
  or ``rediss://…`` for TLS; or
- a Redis Cluster: the same URL with the scheme ``redis+cluster://`` (``rediss+cluster://`` for
  TLS), naming one or more seed nodes, comma-separated — ``redis+cluster://:pw@node-0:6379`` or
  ``redis+cluster://node-0:6379,node-1:6379,node-2:6379``. The client discovers the other nodes
  and the slot map from any seed that answers, follows ``MOVED``/``ASK`` redirections and
  re-reads the map when the cluster changes. A cluster has only database 0.

The scheme says which, rather than a probe at start: a probe would need the network before the
first request and would guess wrong while the server is down. A plain ``redis://`` URL pointing
at a cluster node fails loudly (``MOVED`` errors, counted by kind in
``gateway_ratelimit_backend_errors_total``), never silently on one slot range.

Everything that reaches Redis works on both: every multi-key script and every transaction keeps
its keys in one hash slot (the ``{account}`` hash tag), pipelines are split per node by the
cluster client (each command of a non-transactional pipeline is independent), and the sweeps
that read many accounts read a fixed set of hash-tagged shards (see
:mod:`gateway.detect.redis_window_store`).
"""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import DataError, RedisClusterException, RedisError

#: Either client; both have the commands, pipelines and scripts the gateway uses.
RedisClient: TypeAlias = Redis | RedisCluster

#: What a call on either client raises when Redis cannot answer. The cluster client raises
#: ``RedisClusterException`` — not a ``RedisError`` — when no seed node is reachable or the slots
#: are not all covered (a primary down before its replica takes over): an outage all the same.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


class PackedConnection(Connection):
    """A TCP connection whose commands are encoded by hiredis's C packer, as redis-py's own
    synchronous client does, instead of redis-py's Python encoder (its asyncio client has no
    such option): ~3x cheaper per command, the same bytes on the wire. The gateway's commands
    carry only str, bytes, int and float arguments. Measured in bench/hotpath_results.md."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # redis-py raises DataError for what it cannot encode
            raise DataError(str(exc)) from exc


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def _host_port(seed: str) -> tuple[str, int]:
    """``host[:port]`` or ``[ipv6][:port]``; the port defaults to 6379."""
    if seed.startswith("["):
        host, _, rest = seed[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 6379
    host, sep, port = seed.rpartition(":")
    return (host, int(port)) if sep else (seed, 6379)


def _split_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """The URL with its scheme made plain and only its first seed; the other seeds."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES[parts.scheme.lower()]
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds = [h.strip() for h in hosts.split(",") if h.strip()]
    if not seeds:
        raise ValueError("a redis+cluster:// URL needs at least one host")
    others = [_host_port(seed) for seed in seeds[1:]]
    netloc = f"{userinfo}@{seeds[0]}" if userinfo else seeds[0]
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment)), others


def connect(url: str, *, timeout_s: float = 1.0, connect_timeout_s: float | None = None,
            retry_on_timeout: bool | None = None) -> RedisClient:
    """A client for ``url`` (see the module docstring for the schemes). ``timeout_s`` bounds
    every command's socket read, ``connect_timeout_s`` (default: ``timeout_s``) a connect.
    Replies are bytes (``decode_responses`` off), as every caller expects. Nothing connects
    until the first command."""
    connect_timeout = timeout_s if connect_timeout_s is None else connect_timeout_s
    if is_cluster_url(url):
        first, others = _split_seeds(url)
        return RedisCluster.from_url(
            first, socket_timeout=timeout_s, socket_connect_timeout=connect_timeout,
            startup_nodes=[ClusterNode(host, port) for host, port in others] or None,
        )
    options: dict[str, Any] = {"socket_timeout": timeout_s,
                               "socket_connect_timeout": connect_timeout}
    if retry_on_timeout is not None:
        options["retry_on_timeout"] = retry_on_timeout
    if urlsplit(url).scheme.lower() == "redis":  # rediss:// and unix:// keep their own classes
        options["connection_class"] = PackedConnection
    return Redis.from_url(url, **options)


async def ping(client: RedisClient) -> bool:
    """Whether Redis answers: a single server, or *every* primary of a cluster (``PING`` to one
    node proves nothing about the slots the others hold; ``/readyz`` asks this)."""
    if isinstance(client, RedisCluster):
        return bool(await client.ping(target_nodes=RedisCluster.PRIMARIES))
    return bool(await client.ping())
