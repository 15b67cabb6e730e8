"""What the admin API needs from the app, and the FastAPI dependency that checks admin tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.accounts.operations import AccountOperations, CacheNotifier
from gateway.admin.errors import insufficient_role, invalid_admin_token
from gateway.auth.admin_tokens import Actor, AdminTokens
from gateway.detect.ledger import RiskLedger
from gateway.domain.roles import Role, has_role
from gateway.metrics import Metrics
from gateway.settings import Settings


def _ignore(_: str) -> None:
    return None


@dataclass
class AdminDeps:
    """Wiring for :func:`gateway.admin.routes.create_admin_router`.

    ``on_account_changed(account_id)`` and ``on_key_revoked(key_hash)`` run after a change has
    committed; the app passes callbacks that drop this replica's cached keys, so the change takes
    effect here at once and on other replicas within the key-cache TTL. They must not block.
    """

    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    tokens: AdminTokens
    metrics: Metrics
    on_account_changed: Callable[[str], None] = _ignore
    on_key_revoked: Callable[[str], None] = _ignore
    risk: RiskLedger | None = None
    """The owner of account risk (the detector's); a reviewer's dismissal lowers it there.
    None: no detector in this process, the database's copy is the only one."""

    def account_operations(self) -> AccountOperations:
        """The audited-change service the routes write through, notifying these callbacks."""
        return AccountOperations(
            self.sessions,
            CacheNotifier(account_changed=self.on_account_changed,
                          key_revoked=self.on_key_revoked),
            key_hash_secret=self.settings.key_hash_key(),
        )


bearer = HTTPBearer(auto_error=False, description="An admin token (viewer, reviewer or admin).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_role(tokens: AdminTokens, required: Role) -> Callable[..., Awaitable[Actor]]:
    """A dependency yielding the calling :class:`Actor`: 401 without a valid token, 403 when its
    role is below ``required``."""

    async def dependency(credentials: Credentials) -> Actor:
        actor = tokens.authenticate(credentials.credentials if credentials else None)
        if actor is None:
            raise invalid_admin_token()
        if not has_role(actor.role, required):
            raise insufficient_role(required)
        return actor

    return dependency
