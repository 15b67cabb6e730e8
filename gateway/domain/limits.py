"""Per-account limits, and the tiers that give an account its defaults."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, Field

#: The limit names, in the order the admin API lists them; an account may override any of them.
LIMIT_NAMES: Final = (
    "requests_per_minute", "tokens_per_minute", "tokens_per_day", "max_concurrent"
)


class TierLimits(BaseModel):
    """Per-account limits; names are part of the admin API's contract."""

    requests_per_minute: int = Field(ge=0)
    tokens_per_minute: int = Field(ge=0)
    tokens_per_day: int = Field(ge=0)
    max_concurrent: int = Field(ge=0)


def default_tiers() -> dict[str, TierLimits]:
    """The tiers a fresh configuration knows; ``throttled`` is where throttled accounts drop."""
    return {
        "free": TierLimits(
            requests_per_minute=20, tokens_per_minute=40_000,
            tokens_per_day=200_000, max_concurrent=2,
        ),
        "standard": TierLimits(
            requests_per_minute=600, tokens_per_minute=400_000,
            tokens_per_day=20_000_000, max_concurrent=32,
        ),
        "enterprise": TierLimits(
            requests_per_minute=6_000, tokens_per_minute=4_000_000,
            tokens_per_day=400_000_000, max_concurrent=256,
        ),
        "throttled": TierLimits(
            requests_per_minute=5, tokens_per_minute=5_000,
            tokens_per_day=50_000, max_concurrent=1,
        ),
    }
