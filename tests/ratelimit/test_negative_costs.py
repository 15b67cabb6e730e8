"""Defence in depth: whatever reaches the limiter, a cost never credits an account. The edge
refuses negative ``max_tokens``; the limiter refuses a negative cost itself, and both backends
(Lua and in-process) treat one that slips through as zero, debt included."""

from __future__ import annotations

import pytest

from gateway.domain.limits import TierLimits
from gateway.ratelimit.backend import AdmitRequest, Backend, InProcessBackend
from gateway.ratelimit.redis_backend import RedisBackend

T0 = 1_900_000_000_000_000
LEASE = 30_000_000
LIMITS = TierLimits(requests_per_minute=1_000, tokens_per_minute=1_000, tokens_per_day=10**9,
                    max_concurrent=100)


def _forged(cost: int, slot: str) -> AdmitRequest:
    """A request with a negative cost, as a bug upstream of the limiter might build one."""
    request = AdmitRequest("a", LIMITS, 0, slot, LEASE, now_us=T0)
    object.__setattr__(request, "cost", cost)
    return request


def test_an_admission_request_refuses_a_negative_cost() -> None:
    with pytest.raises(ValueError, match="never negative"):
        AdmitRequest("a", LIMITS, -1, "s", LEASE)


@pytest.fixture(params=["redis", "in_process"])
def backend(request: pytest.FixtureRequest, redis_backend: RedisBackend) -> Backend:
    return redis_backend if request.param == "redis" else InProcessBackend()


async def test_a_negative_cost_neither_credits_nor_erases_debt(backend: Backend) -> None:
    assert (await backend.admit(AdmitRequest("a", LIMITS, 0, "r", LEASE, now_us=T0))).allowed
    await backend.settle("a", LIMITS, "r", 0, 5_000, now_us=T0)  # usage far over the limit
    for i in range(3):
        forged = await backend.admit(_forged(-10**15, f"f{i}"))
        assert not forged.allowed and forged.rejected_by == "tokens_per_minute"
    honest = await backend.admit(AdmitRequest("a", LIMITS, 1, "h", LEASE, now_us=T0))
    assert not honest.allowed


async def test_negative_reported_usage_refunds_no_more_than_the_reservation(
    backend: Backend,
) -> None:
    first = await backend.admit(AdmitRequest("a", LIMITS, 600, "r", LEASE, now_us=T0))
    assert first.allowed and first.tokens_remaining == 400
    await backend.settle("a", LIMITS, "r", 600, -10**12, now_us=T0)
    probe = await backend.admit(AdmitRequest("a", LIMITS, 0, "p", LEASE, now_us=T0))
    assert probe.tokens_remaining == 1_000  # back to full, never beyond
