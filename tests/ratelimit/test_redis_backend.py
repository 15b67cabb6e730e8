"""The Lua path on the real Redis: rolling limits, exact retry-after, leases, reconciliation."""

from __future__ import annotations

from gateway.domain.limits import TierLimits
from gateway.ratelimit.backend import AdmitRequest
from gateway.ratelimit.redis_backend import RedisBackend
from gateway.redis_client import RedisClient

T0 = 1_900_000_000_000_000
SECOND = 1_000_000
LEASE = 30 * SECOND


def _limits(rpm: int = 10, tpm: int = 100_000, tpd: int = 1_000_000, conc: int = 100) -> TierLimits:
    return TierLimits(requests_per_minute=rpm, tokens_per_minute=tpm, tokens_per_day=tpd,
                      max_concurrent=conc)


async def _admit(backend: RedisBackend, now: int, limits: TierLimits, cost: int = 0,
                 slot: str = "s", account: str = "a"):  # type: ignore[no-untyped-def]
    return await backend.admit(AdmitRequest(account, limits, cost, slot, LEASE, now_us=now))


async def test_no_double_burst_at_a_window_edge(redis_backend: RedisBackend) -> None:
    limits = _limits(rpm=10)
    edge = T0 + 59_900_000
    first = [await _admit(redis_backend, edge, limits, slot=f"a{i}") for i in range(10)]
    assert all(d.allowed for d in first)
    second = [await _admit(redis_backend, T0 + 60_100_000, limits, slot=f"b{i}")
              for i in range(10)]
    assert not any(d.allowed for d in second)
    assert second[0].rejected_by == "requests"


async def test_retry_after_is_exact(redis_backend: RedisBackend) -> None:
    limits = _limits(rpm=10)
    for i in range(10):
        assert (await _admit(redis_backend, T0, limits, slot=f"a{i}")).allowed
    refused = await _admit(redis_backend, T0 + 123, limits, slot="x")
    assert not refused.allowed and refused.should_retry
    wait = refused.retry_after_us
    assert not (await _admit(redis_backend, T0 + 123 + wait - 1, limits, slot="y")).allowed
    assert (await _admit(redis_backend, T0 + 123 + wait, limits, slot="z")).allowed


async def test_all_limits_are_consumed_together_or_not_at_all(redis_backend: RedisBackend) -> None:
    limits = _limits(rpm=100, tpm=1_000)
    assert (await _admit(redis_backend, T0, limits, cost=900)).allowed
    refused = await _admit(redis_backend, T0, limits, cost=200)
    assert refused.rejected_by == "tokens_per_minute"
    # The refused request spent no request budget.
    assert refused.requests_remaining == 99


async def test_a_request_larger_than_the_token_limit_is_told_not_to_retry(
    redis_backend: RedisBackend,
) -> None:
    refused = await _admit(redis_backend, T0, _limits(tpm=1_000), cost=1_001)
    assert not refused.allowed and not refused.should_retry


async def test_concurrency_slots_are_released_and_a_crashed_replicas_expire(
    redis_backend: RedisBackend,
) -> None:
    limits = _limits(conc=2)
    assert (await _admit(redis_backend, T0, limits, slot="one")).allowed
    assert (await _admit(redis_backend, T0, limits, slot="two")).allowed
    full = await _admit(redis_backend, T0, limits, slot="three")
    assert full.rejected_by == "concurrency"
    await redis_backend.settle("a", limits, "one", 0, 0, now_us=T0)
    assert (await _admit(redis_backend, T0, limits, slot="four")).allowed
    # Nobody settles "two" or "four" (their replica died): their leases run out.
    assert not (await _admit(redis_backend, T0 + LEASE - 1, limits, slot="five")).allowed
    assert (await _admit(redis_backend, T0 + LEASE, limits, slot="six")).allowed


async def test_renewed_leases_outlive_their_first_term(redis_backend: RedisBackend) -> None:
    limits = _limits(conc=1)
    assert (await _admit(redis_backend, T0, limits, slot="long-stream")).allowed
    await redis_backend.renew([("a", "long-stream")], LEASE, now_us=T0 + LEASE - SECOND)
    assert not (await _admit(redis_backend, T0 + LEASE + SECOND, limits, slot="x")).allowed


async def test_settling_refunds_or_charges_the_difference(redis_backend: RedisBackend) -> None:
    limits = _limits(tpm=1_000)
    reserved = await _admit(redis_backend, T0, limits, cost=600, slot="r")
    assert reserved.tokens_remaining == 400
    await redis_backend.settle("a", limits, "r", 600, 100, now_us=T0)
    after_refund = await _admit(redis_backend, T0, limits, cost=0, slot="probe1")
    assert after_refund.tokens_remaining == 900
    await redis_backend.settle("a", limits, "probe1", 0, 950, now_us=T0)
    in_debt = await _admit(redis_backend, T0, limits, cost=0, slot="probe2")
    assert not in_debt.allowed and in_debt.rejected_by == "tokens_per_minute"


async def test_accounts_are_independent_and_keys_share_a_hash_tag(
    redis: RedisClient, redis_backend: RedisBackend,
) -> None:
    limits = _limits(rpm=1)
    assert (await _admit(redis_backend, T0, limits, account="acct_x")).allowed
    assert not (await _admit(redis_backend, T0, limits, account="acct_x", slot="2")).allowed
    assert (await _admit(redis_backend, T0, limits, account="acct_y")).allowed
    keys = [k.decode() async for k in redis.scan_iter(match=f"{redis_backend._prefix}:*acct_x*")]
    assert keys and all("{acct_x}" in k for k in keys)


async def test_a_concurrency_refusal_suggests_a_one_second_retry(
    redis_backend: RedisBackend,
) -> None:
    limits = _limits(conc=1)
    assert (await _admit(redis_backend, T0, limits, slot="busy")).allowed
    refused = await _admit(redis_backend, T0, limits, slot="waiting")
    assert (refused.rejected_by, refused.retry_after_us) == ("concurrency", SECOND)
