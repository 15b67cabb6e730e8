"""The key cache keeps the database off the hot path without keeping revoked keys alive long."""

import asyncio

import pytest

from gateway.auth.cache import KeyCache
from gateway.auth.principal import Principal, effective_limits
from gateway.domain.limits import TierLimits, default_tiers

LIMITS = TierLimits(requests_per_minute=1, tokens_per_minute=1, tokens_per_day=1,
                    max_concurrent=1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Loader:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.principal: Principal | None = Principal("key_1", "acct_1", "active", "free", LIMITS)

    async def __call__(self, key_hash: str) -> Principal | None:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("database down")
        return self.principal


async def test_hits_within_ttl_do_not_query_and_expiry_reloads() -> None:
    loader, clock = Loader(), Clock()
    cache = KeyCache(loader, ttl_s=2, clock=clock)
    assert (await cache.get("h")) == loader.principal
    await cache.get("h")
    assert loader.calls == 1
    loader.principal = None  # revoked in the database
    clock.now = 2.5
    assert await cache.get("h") is None
    assert loader.calls == 2


async def test_concurrent_misses_share_one_query() -> None:
    loader = Loader()
    cache = KeyCache(loader, ttl_s=2)
    results = await asyncio.gather(*(cache.get("h") for _ in range(20)))
    assert loader.calls == 1
    assert all(r == loader.principal for r in results)


async def test_unknown_keys_are_cached_too() -> None:
    loader = Loader()
    loader.principal = None
    cache = KeyCache(loader, ttl_s=2)
    for _ in range(5):
        assert await cache.get("bad") is None
    assert loader.calls == 1


async def test_invalidation_by_account_drops_its_keys_at_once() -> None:
    loader = Loader()
    cache = KeyCache(loader, ttl_s=60)
    await cache.get("h")
    cache.invalidate_account("acct_1")
    await cache.get("h")
    assert loader.calls == 2


async def test_database_outage_serves_known_keys_stale_and_fails_unknown_ones() -> None:
    loader, clock = Loader(), Clock()
    cache = KeyCache(loader, ttl_s=1, stale_s=60, clock=clock)
    known = await cache.get("known")
    loader.fail = True
    clock.now = 5
    assert await cache.get("known") == known
    with pytest.raises(ConnectionError):
        await cache.get("never-seen")
    clock.now = 100  # beyond the stale window: fail closed
    with pytest.raises(ConnectionError):
        await cache.get("known")


def test_throttled_accounts_drop_to_the_throttled_tier_and_overrides_apply() -> None:
    tiers = default_tiers()
    assert effective_limits(tiers, "enterprise", "throttled", None) == (
        "throttled", tiers["throttled"])
    tier, limits = effective_limits(tiers, "free", "active", {"max_concurrent": 9})
    assert tier == "free"
    assert limits.max_concurrent == 9
    assert limits.requests_per_minute == tiers["free"].requests_per_minute
