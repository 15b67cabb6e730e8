"""The Redis backend: shared by every replica, one round trip per admission decision (and calls
issued together are pipelined together).

Works on one Redis and on a Redis Cluster alike: an account's two keys share the hash tag
``{account_id}``, so each script touches one slot (one node), and accounts spread over the
cluster. Time is each node's own clock (``TIME`` inside the script); ``renew`` reads one node's
clock for a lease of a minute, where the skew between nodes does not matter."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.domain.limits import TierLimits
from gateway.metrics import Metrics
from gateway.ratelimit.backend import AdmitRequest, settle_delta
from gateway.ratelimit.decision import KIND_CODES, Decision
from gateway.ratelimit.pipeline import Combined, ScriptPipeline
from gateway.ratelimit.redis_scripts import ADMIT, BATCH, SETTLE
from gateway.redis_client import RedisClient, ping


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


ADMIT_SHA, SETTLE_SHA, BATCH_SHA = _sha(ADMIT), _sha(SETTLE), _sha(BATCH)


class RedisBackend:
    def __init__(self, redis: RedisClient, *, metrics: Metrics, prefix: str = "gw:rl") -> None:
        self._redis = redis
        self._prefix = prefix
        combined = None if isinstance(redis, RedisCluster) else Combined(
            BATCH, BATCH_SHA, {ADMIT_SHA: "a", SETTLE_SHA: "s"})  # one node: one call a batch
        self._pipeline = ScriptPipeline(redis, metrics=metrics, combined=combined)

    def _keys(self, account_id: str) -> tuple[str, str]:
        tag = f"{self._prefix}:{{{account_id}}}"
        return f"{tag}:lim", f"{tag}:conc"

    async def admit(self, request: AdmitRequest) -> Decision:
        limits = request.limits
        result = await self._pipeline.call(ADMIT, ADMIT_SHA, self._keys(request.account_id), (
            _now_arg(request.now_us), limits.requests_per_minute, limits.tokens_per_minute,
            limits.tokens_per_day, limits.max_concurrent, request.cost, request.slot,
            request.lease_us,
        ))
        allowed, code, retry, should_retry, r_left, r_reset, t_left, t_reset = map(int, result)
        return Decision(
            allowed=allowed == 1, rejected_by=KIND_CODES[code - 1] if code else None,
            retry_after_us=retry, should_retry=should_retry == 1,
            requests_remaining=r_left, requests_reset_us=r_reset,
            tokens_remaining=t_left, tokens_reset_us=t_reset,
        )

    async def settle(
        self, account_id: str, limits: TierLimits, slot: str, reserved: int, used: int | None,
        now_us: int | None = None,
    ) -> None:
        """Deferred: applied before this process's next admission, or within a few ms."""
        delta = settle_delta(reserved, used)
        self._pipeline.defer(SETTLE, SETTLE_SHA, self._keys(account_id), (
            _now_arg(now_us), limits.tokens_per_minute, limits.tokens_per_day, delta, slot,
        ))

    async def drain(self) -> None:
        await self._pipeline.drain()

    async def renew(
        self, slots: Sequence[tuple[str, str]], lease_us: int, now_us: int | None = None
    ) -> None:
        if not slots:
            return
        now = now_us if now_us is not None else await self._server_time_us()
        async with self._redis.pipeline(transaction=False) as pipe:
            for account_id, slot in slots:
                pipe.zadd(self._keys(account_id)[1], {slot: now + lease_us}, xx=True)
            await pipe.execute()

    async def probe(self) -> None:
        """PING every primary (one server, or each node of a cluster)."""
        if not await ping(self._redis):
            raise RedisConnectionError("Redis did not answer PING")

    async def _server_time_us(self) -> int:
        seconds, micros = await self._redis.time()
        return int(seconds) * 1_000_000 + int(micros)


def _now_arg(now_us: int | None) -> str:
    return "" if now_us is None else str(now_us)
