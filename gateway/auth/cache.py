"""In-process cache of API key → principal, so the hot path does not query the database.

Entries live ``ttl`` seconds, so revocation and suspension reach every replica within that time;
the replica that made the change drops the entries at once. Concurrent misses for one key share
one database query (single flight). Unknown keys are cached too, so a flood of bad keys costs one
query per key per TTL.

If the database fails, a key seen within ``stale_s`` keeps its last known principal (fail open
for known keys, so an outage of the account store does not take the gateway down); keys never
seen fail closed with the loader's error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.auth.principal import Principal

Loader = Callable[[str], Awaitable[Principal | None]]
MAX_ENTRIES = 100_000


@dataclass(slots=True)
class _Entry:
    principal: Principal | None
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
        self._pending: dict[str, asyncio.Future[Principal | None]] = {}

    async def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is not None and entry.expires > self._clock():
            return entry.principal
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
            stale = self._entries.get(key_hash)
            if stale is not None and stale.expires + self._stale > self._clock():
                future.set_result(stale.principal)
                return stale.principal
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise, nobody logs "never retrieved"
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._pending[key_hash]
        future.set_result(principal)
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key_hash] = _Entry(principal, self._clock() + self._ttl)
        return principal

    def invalidate_key(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)

    def invalidate_account(self, account_id: str) -> None:
        stale = [
            h for h, e in self._entries.items()
            if e.principal is not None and e.principal.account_id == account_id
        ]
        for key_hash in stale:
            del self._entries[key_hash]
