"""The key cache keeps the database off the hot path without keeping revoked keys alive long."""

import asyncio

import pytest

from gateway.auth import cache as key_cache
from gateway.auth.cache import MAX_UNKNOWN, KeyCache
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
        self.known: set[str] | None = None  # when set, only these hashes resolve

    async def __call__(self, key_hash: str) -> Principal | None:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("database down")
        if self.known is not None and key_hash not in self.known:
            return None
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


async def test_a_flood_of_unknown_keys_never_evicts_a_known_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Anyone can mint well-formed keys: past both bounds, the known key is still served from
    the cache and, with the database down, still resolves from its stale entry."""
    monkeypatch.setattr(key_cache, "MAX_ENTRIES", 50)
    monkeypatch.setattr(key_cache, "MAX_UNKNOWN", 20)
    loader, clock = Loader(), Clock()
    loader.known = {"known"}
    cache = KeyCache(loader, ttl_s=1, stale_s=60, clock=clock)
    known = await cache.get("known")
    assert known is not None
    for i in range(200):
        assert await cache.get(f"random-{i}") is None
    calls = loader.calls
    assert await cache.get("known") == known
    assert loader.calls == calls  # a cache hit
    loader.fail = True
    clock.now = 5  # expired, within the stale window
    assert await cache.get("known") == known


async def test_the_unknown_key_cache_stays_bounded_evicting_the_oldest_first() -> None:
    loader = Loader()
    loader.principal = None
    cache = KeyCache(loader, ttl_s=60)
    for i in range(MAX_UNKNOWN + 1):
        await cache.get(f"random-{i}")
    calls = loader.calls
    await cache.get(f"random-{MAX_UNKNOWN}")  # the newest: still cached
    assert loader.calls == calls
    await cache.get("random-0")  # the oldest: evicted, so asked again
    assert loader.calls == calls + 1


async def test_a_key_cached_as_unknown_is_found_once_invalidated() -> None:
    """A key looked up before it existed must not stay unknown for a TTL after it is made."""
    loader = Loader()
    loader.known = set()
    cache = KeyCache(loader, ttl_s=60)
    assert await cache.get("new") is None
    loader.known = {"new"}
    cache.invalidate_key("new")
    assert await cache.get("new") == loader.principal
    assert loader.calls == 2


async def test_a_key_revoked_after_expiry_loses_its_stale_principal() -> None:
    """Once the database says a key is gone, an outage must not bring its principal back."""
    loader, clock = Loader(), Clock()
    cache = KeyCache(loader, ttl_s=1, stale_s=60, clock=clock)
    await cache.get("h")
    loader.principal = None
    clock.now = 2
    assert await cache.get("h") is None
    loader.fail = True
    clock.now = 4
    assert await cache.get("h") is None


def test_throttled_accounts_drop_to_the_throttled_tier_and_overrides_apply() -> None:
    tiers = default_tiers()
    assert effective_limits(tiers, "enterprise", "throttled", None) == (
        "throttled", tiers["throttled"])
    tier, limits = effective_limits(tiers, "free", "active", {"max_concurrent": 9})
    assert tier == "free"
    assert limits.max_concurrent == 9
    assert limits.requests_per_minute == tiers["free"].requests_per_minute
