"""The model servers' shared memory of used gateway signatures, in Redis.

Behind one gateway there may be several model-server processes (workers, replicas); each
remembering only its own nonces would let a captured request be replayed once on every other
one. With ``GATEWAY_MODELSERVER_REDIS_URL`` set they record each nonce with ``SET … NX PX``, so
the first to see it wins and the rest refuse it, for as long as its signature could be accepted.
When Redis cannot answer, the request is refused (fail closed): serving it could admit a replay.
"""

from __future__ import annotations

import math

from gateway.redis_client import REDIS_ERRORS
from gateway.redis_client import connect as connect_redis
from gateway.upstream_identity.signature import ReplayCacheUnavailable

DEFAULT_PREFIX = "gateway:upstream-nonce:"


class RedisNonces:
    """A :class:`~gateway.upstream_identity.signature.NonceStore` shared through Redis."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, timeout_s: float = 1.0) -> None:
        self._redis = connect_redis(url, timeout_s=timeout_s)  # one Redis or a cluster
        self._prefix = prefix

    async def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        ttl_ms = max(1, math.ceil((expires_at - now) * 1000))
        try:
            created = await self._redis.set(self._prefix + nonce, b"1", nx=True, px=ttl_ms)
        except REDIS_ERRORS as exc:
            raise ReplayCacheUnavailable("replay cache unreachable") from exc
        return bool(created)

    async def aclose(self) -> None:
        await self._redis.aclose()
