"""The Redis backend: shared by every replica, one round trip per admission decision."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from gateway.ratelimit import gcra
from gateway.ratelimit.backend import AdmitRequest, decide
from gateway.ratelimit.decision import Decision, LimitKind
from gateway.ratelimit.redis_scripts import ADMIT, SETTLE
from gateway.settings import TierLimits


class RedisBackend:
    def __init__(self, redis: Redis, prefix: str = "gw:rl") -> None:
        self._redis = redis
        self._prefix = prefix
        self._admit = redis.register_script(ADMIT)
        self._settle = redis.register_script(SETTLE)

    def _key(self, account_id: str, name: str) -> str:
        return f"{self._prefix}:{{{account_id}}}:{name}"

    async def admit(self, request: AdmitRequest) -> Decision:
        a, limits = request.account_id, request.limits
        result = await self._admit(
            keys=[self._key(a, "req"), self._key(a, "tpm"), self._key(a, "tpd"),
                  self._key(a, "conc")],
            args=[_now_arg(request.now_us), limits.requests_per_minute, limits.tokens_per_minute,
                  limits.tokens_per_day, limits.max_concurrent, request.cost, request.slot,
                  request.lease_us],
        )
        values = [int(v) for v in result]
        now = values[2]
        checks: dict[LimitKind, gcra.Check] = {
            "requests": _check(values[3:8]),
            "tokens_per_minute": _check(values[8:13]),
            "tokens_per_day": _check(values[13:18]),
        }
        return decide(values[0] == 1, values[1] == 1, checks, limits, now)

    async def settle(
        self, account_id: str, limits: TierLimits, slot: str, reserved: int, used: int | None,
        now_us: int | None = None,
    ) -> None:
        delta = 0 if used is None else used - reserved
        await self._settle(
            keys=[self._key(account_id, "tpm"), self._key(account_id, "tpd"),
                  self._key(account_id, "conc")],
            args=[_now_arg(now_us), limits.tokens_per_minute, limits.tokens_per_day, delta, slot],
        )

    async def renew(
        self, slots: Sequence[tuple[str, str]], lease_us: int, now_us: int | None = None
    ) -> None:
        if not slots:
            return
        now = now_us if now_us is not None else await self._server_time_us()
        async with self._redis.pipeline(transaction=False) as pipe:
            for account_id, slot in slots:
                pipe.zadd(self._key(account_id, "conc"), {slot: now + lease_us}, xx=True)
            await pipe.execute()

    async def _server_time_us(self) -> int:
        seconds, micros = await self._redis.time()
        return int(seconds) * 1_000_000 + int(micros)

    async def ping(self) -> bool:
        return bool(await self._redis.ping())


def _now_arg(now_us: int | None) -> str:
    return "" if now_us is None else str(now_us)


def _check(values: list[int]) -> gcra.Check:
    allowed, tat, new_tat, retry_after, fits = values
    return gcra.Check(allowed == 1, tat, new_tat, retry_after, fits == 1)
