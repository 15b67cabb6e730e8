"""Who is calling: the resolved identity behind an API key."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.limits import TierLimits

BLOCKED_STATUSES = frozenset({"suspended", "banned"})


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    account_id: str
    status: str
    tier: str
    limits: TierLimits
    cohort: str | None = None
    """The watermark identity of the flagged campaign the account belongs to, if any."""

    @property
    def blocked(self) -> bool:
        return self.status in BLOCKED_STATUSES

    @property
    def watermark_identity(self) -> str:
        """Whose key watermarks this caller's outputs: its cohort's, else its own."""
        return self.cohort or self.account_id


def effective_limits(
    tiers: dict[str, TierLimits], tier: str, status: str, overrides: dict[str, int] | None
) -> tuple[str, TierLimits]:
    """The tier and limits in force: a throttled account drops to the ``throttled`` tier at once;
    otherwise the account's tier with its per-account overrides on top."""
    if status == "throttled":
        return "throttled", tiers["throttled"]
    base = tiers.get(tier) or tiers["standard"]
    if not overrides:
        return tier, base
    return tier, base.model_copy(update={k: v for k, v in overrides.items() if v is not None})
