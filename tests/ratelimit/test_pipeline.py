"""Script calls batched while one is in flight still get their own answers, and survive Redis
losing its script cache."""

from __future__ import annotations

import asyncio

from redis.asyncio.cluster import RedisCluster

from gateway.domain.limits import TierLimits
from gateway.metrics import Metrics
from gateway.ratelimit.backend import AdmitRequest
from gateway.ratelimit.redis_backend import RedisBackend
from gateway.redis_client import RedisClient
from tests.support.waiting import wait_until_async

LIMITS = TierLimits(requests_per_minute=10, tokens_per_minute=10**6, tokens_per_day=10**8,
                    max_concurrent=1000)
T0 = 2_000_000_000_000_000


def _request(account: str, slot: str) -> AdmitRequest:
    return AdmitRequest(account, LIMITS, 0, slot, 30_000_000, now_us=T0)


async def test_concurrent_calls_are_batched_and_each_gets_its_own_decision(
    redis_backend: RedisBackend,
) -> None:
    decisions = await asyncio.gather(*(
        redis_backend.admit(_request(f"acct{i % 2}", f"s{i}")) for i in range(50)
    ))
    for account in (0, 1):
        mine = decisions[account::2]
        assert sum(d.allowed for d in mine) == 10
        # Admissions happen in call order: each account's first ten were admitted.
        assert all(d.allowed for d in mine[:10])
        assert [d.requests_remaining for d in mine[:10]] == list(range(9, -1, -1))


async def test_a_flushed_script_cache_is_reloaded_for_lone_and_batched_calls(
    redis: RedisClient, redis_backend: RedisBackend,
) -> None:
    await redis.script_flush()
    assert (await redis_backend.admit(_request("a", "1"))).allowed
    await redis.script_flush()
    batch = await asyncio.gather(*(redis_backend.admit(_request("b", str(i))) for i in range(5)))
    assert all(d.allowed for d in batch)


async def test_a_batch_sent_after_a_script_flush_is_retried_once_loaded(
    redis: RedisClient, metrics: Metrics,
) -> None:
    from gateway.ratelimit.pipeline import ScriptPipeline, _Call

    script = "return tonumber(ARGV[1]) * 2"
    sha = await redis.script_load(script)
    await redis.script_flush()
    loop = asyncio.get_running_loop()
    calls = [_Call(script, sha, (), (n,), loop.create_future()) for n in (1, 2, 3)]
    await ScriptPipeline(redis, metrics=metrics)._send(calls)
    assert [c.future.result() for c in calls] == [2, 4, 6]


async def test_a_deferred_settlement_goes_out_on_its_own_soon(
    redis: RedisClient, redis_backend: RedisBackend,
) -> None:
    assert (await redis_backend.admit(_request("c", "slot"))).allowed
    slots_key = redis_backend._keys("c")[1]
    assert await redis.zcard(slots_key) == 1
    await redis_backend.settle("c", LIMITS, "slot", 0, 0, now_us=T0)
    # No admission follows: the deferral timer alone must send it.
    async def slots_released() -> bool:
        return await redis.zcard(slots_key) == 0

    await wait_until_async(slots_released, interval=0.005, what="the deferred settlement sent")


async def test_drain_sends_what_is_deferred(
    redis: RedisClient, redis_backend: RedisBackend,
) -> None:
    assert (await redis_backend.admit(_request("d", "slot"))).allowed
    await redis_backend.settle("d", LIMITS, "slot", 0, 0, now_us=T0)
    await redis_backend.drain()
    assert await redis.zcard(redis_backend._keys("d")[1]) == 0


class _ClosedTransport:
    """A client whose every pipeline dies the way uvloop does on a closed connection."""

    def pipeline(self, transaction: bool = False) -> _ClosedTransport:
        return self

    async def __aenter__(self) -> _ClosedTransport:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def execute_command(self, *_: object) -> None:
        return None

    async def execute(self, raise_on_error: bool = True) -> list[object]:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; "
                           "the handler is closed")


async def test_a_transport_closed_under_the_client_is_an_outage_not_a_crash(
        metrics: Metrics) -> None:
    """uvloop raises RuntimeError when a closed connection is written to: the limiter must see
    a Redis ConnectionError (and fail open or closed as configured), never a 500."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from gateway.ratelimit.limiter import BACKEND_ERRORS
    from gateway.ratelimit.pipeline import ScriptPipeline, _Call

    loop = asyncio.get_running_loop()
    calls = [_Call("return 1", "sha", ("k",), (), loop.create_future()) for _ in range(2)]
    pipeline = ScriptPipeline(_ClosedTransport(), metrics=metrics)  # type: ignore[arg-type]
    pipeline._loaded.add("sha")
    await pipeline._send(calls)
    for call in calls:
        assert call.future is not None
        error = call.future.exception()
        assert isinstance(error, RedisConnectionError) and isinstance(error, BACKEND_ERRORS)


async def _evalsha_calls(redis: RedisClient) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_on_one_redis_a_batch_is_one_script_call_and_each_keeps_its_decision(
    redis: RedisClient, redis_backend: RedisBackend,
) -> None:
    """Calls that queue behind one in flight go out as one combined call, not one EVALSHA each,
    and each still gets its own decision in call order (settlements first, as deferred)."""
    assert (await redis_backend.admit(_request("e0", "warm"))).allowed  # scripts loaded
    await redis_backend.settle("e0", LIMITS, "warm", 0, 0, now_us=T0)  # deferred: rides along
    before = await _evalsha_calls(redis)
    decisions = await asyncio.gather(*(
        redis_backend.admit(_request(f"e{i % 3}", f"s{i}")) for i in range(30)))
    if isinstance(redis, RedisCluster):  # calls of a batch go to their nodes, pipelined
        assert redis_backend._pipeline._combined is None
    else:
        calls = await _evalsha_calls(redis) - before
        assert calls <= 3, calls  # the first alone (maybe), then one call per batch
    for account in range(3):
        mine = decisions[account::3]
        expected_allowed = 9 if account == 0 else 10  # e0 already spent one of its ten
        assert [d.allowed for d in mine] == [True] * expected_allowed + [False] * (
            10 - expected_allowed)
    assert await redis.zcard(redis_backend._keys("e0")[1]) == 9  # the settled slot is gone
