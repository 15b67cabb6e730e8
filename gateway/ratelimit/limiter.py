"""The limiter interface called on every proxied request.

``admit`` reserves an estimate before forwarding; ``settle`` runs on every exit path afterwards,
with the real token usage when known, to release concurrency and reconcile the reservation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import GatewayError
from gateway.settings import TierLimits


@dataclass(slots=True)
class Admission:
    allowed: bool
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    error: GatewayError | None = None
    reserved_tokens: int = 0


class Limiter(Protocol):
    async def admit(self, account_id: str, limits: TierLimits, estimated_tokens: int) -> Admission:
        ...

    async def settle(self, account_id: str, admission: Admission, used_tokens: int | None) -> None:
        ...


class UnlimitedLimiter:
    """Admits everything: for deployments that limit elsewhere, and the seam's default."""

    async def admit(self, account_id: str, limits: TierLimits, estimated_tokens: int) -> Admission:
        return Admission(allowed=True, reserved_tokens=estimated_tokens)

    async def settle(self, account_id: str, admission: Admission, used_tokens: int | None) -> None:
        return None
