"""The demo's account and key: created once, reused on the next run."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.domain.keys import KEY_SCHEME, hash_key, key_prefix, new_id
from gateway.records import utcnow
from gateway.store import repository
from gateway.store.models import Account, ApiKey

DEMO_ACCOUNT_NAME = "demo"


async def ensure_demo_key(
    session: AsyncSession, requested: str | None, hash_secret: bytes, *, tier: str
) -> str:
    """The demo account's key: ``requested`` (registered if new), else a fresh one."""
    account = await session.scalar(select(Account).where(Account.name == DEMO_ACCOUNT_NAME))
    if account is None:
        account = await repository.create_account(session, name=DEMO_ACCOUNT_NAME, tier=tier)
    if requested is None:
        _, plaintext = await repository.create_key(session, account.id, hash_secret)
        return plaintext
    if not requested.startswith(KEY_SCHEME):
        raise SystemExit(f"gateway: --api-key must start with {KEY_SCHEME!r}")
    if await repository.find_key(session, hash_key(requested, hash_secret)) is None:
        session.add(ApiKey(
            id=new_id("key"), account_id=account.id, key_hash=hash_key(requested, hash_secret),
            prefix=key_prefix(requested), created_at=utcnow(),
        ))
        await session.flush()
    return requested
