"""Resolving a key hash to a principal from the database (the key cache's loader)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.auth.cache import Loader
from gateway.auth.principal import Principal, effective_limits
from gateway.errors import GatewayError
from gateway.settings import Settings
from gateway.store import repository


def database_loader(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> Loader:
    async def load(key_hash: str) -> Principal | None:
        try:
            async with sessions() as session:
                found = await repository.find_key(session, key_hash)
        except Exception as exc:
            raise auth_unavailable() from exc
        if found is None:
            return None
        key, account = found
        tier, limits = effective_limits(settings.tiers, account.tier, account.status,
                                        account.limits)
        return Principal(key.id, account.id, account.status, tier, limits,
                         account.watermark_identity)

    return load


def auth_unavailable() -> GatewayError:
    """Fail closed for keys we have never seen while the account database is unreachable."""
    return GatewayError(
        503, "The account service is temporarily unavailable; retry shortly.",
        type="service_unavailable", code="auth_unavailable", headers={"retry-after": "2"},
    )
