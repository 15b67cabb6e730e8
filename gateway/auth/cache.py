"""In-process cache of API key → principal, so the hot path does not query the database.

Entries live ``ttl`` seconds, so revocation and suspension reach every replica within that time;
the replica that made the change drops the entries at once. Concurrent misses for one key share
one database query (single flight). Unknown keys are cached too, so a flood of bad keys costs one
query per key per TTL.

Known and unknown keys live in separate maps, each bounded and evicting its oldest entry first:
anyone can mint well-formed unknown keys, so a flood of them must never push a known key out
(it would lose its stale fallback below and get a 503 during a database outage). Unknown keys get
a small map of their own; known keys are bounded by the keys that exist.

If the database fails, a key seen within ``stale_s`` keeps its last known principal (fail open
for known keys, so an outage of the account store does not take the gateway down); keys never
seen fail closed with the loader's error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.auth.principal import Principal

Loader = Callable[[str], Awaitable[Principal | None]]
MAX_ENTRIES = 100_000
"""Known keys cached; past it the oldest is evicted."""
MAX_UNKNOWN = 10_000
"""Unknown keys cached, apart from known ones; past it the oldest is evicted."""
_V = TypeVar("_V")


@dataclass(slots=True)
class _Entry:
    principal: Principal
    expires: float


class KeyCache:
    def __init__(
        self, loader: Loader, ttl_s: float, *, stale_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._ttl = ttl_s
        self._stale = stale_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._unknown: dict[str, float] = {}  # key hash → expiry
        self._pending: dict[str, asyncio.Future[Principal | None]] = {}

    async def get(self, key_hash: str) -> Principal | None:
        now = self._clock()
        entry = self._entries.get(key_hash)
        if entry is not None and entry.expires > now:
            return entry.principal
        unknown_until = self._unknown.get(key_hash)
        if unknown_until is not None and unknown_until > now:
            return None
        pending = self._pending.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        return await self._load(key_hash)

    async def _load(self, key_hash: str) -> Principal | None:
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._pending[key_hash] = future
        try:
            principal = await self._loader(key_hash)
        except Exception as exc:
            stale = self._stale_entry(key_hash)
            if stale is not None:
                future.set_result(stale[0])
                return stale[0]
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise, nobody logs "never retrieved"
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._pending[key_hash]
        future.set_result(principal)
        self._store(key_hash, principal)
        return principal

    def _stale_entry(self, key_hash: str) -> tuple[Principal | None] | None:
        """The last answer for a key within the stale window (a 1-tuple, as it may be None),
        so an outage does not turn a key that was known (or unknown) into a 503."""
        horizon = self._clock() - self._stale
        entry = self._entries.get(key_hash)
        if entry is not None and entry.expires > horizon:
            return (entry.principal,)
        unknown_until = self._unknown.get(key_hash)
        if unknown_until is not None and unknown_until > horizon:
            return (None,)
        return None

    def _store(self, key_hash: str, principal: Principal | None) -> None:
        """Record a fresh answer in its map and drop it from the other, so a revoked key loses
        its stale principal and a newly created key is not shadowed by an old miss."""
        expires = self._clock() + self._ttl
        if principal is None:
            self._entries.pop(key_hash, None)
            _put_newest(self._unknown, key_hash, expires, MAX_UNKNOWN)
        else:
            self._unknown.pop(key_hash, None)
            _put_newest(self._entries, key_hash, _Entry(principal, expires), MAX_ENTRIES)

    def invalidate_key(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)
        self._unknown.pop(key_hash, None)

    def invalidate_account(self, account_id: str) -> None:
        """Unknown keys belong to no account, so only known entries can be the account's."""
        stale = [h for h, e in self._entries.items() if e.principal.account_id == account_id]
        for key_hash in stale:
            del self._entries[key_hash]


def _put_newest(entries: dict[str, _V], key: str, value: _V, bound: int) -> None:
    """Insert ``key`` as the newest entry (a dict keeps insertion order), evicting the oldest
    while at ``bound``: one eviction per insert, never a wholesale clear."""
    entries.pop(key, None)
    while len(entries) >= bound:
        del entries[next(iter(entries))]
    entries[key] = value
