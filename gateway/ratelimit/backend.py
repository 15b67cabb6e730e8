"""The backend interface (Redis or in-process) and the in-process backend.

Both run the same decision procedure, in the same order, on the same integer-microsecond
arithmetic (``gcra.py``), so a property test can hold them to identical decisions:
1. concurrency: drop expired slot leases; refuse when ``max_concurrent`` are in flight;
2. requests per minute (cost 1), 3. tokens per minute, 4. tokens per day (cost = reservation).
Nothing is consumed unless every limit admits the request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.limits import TierLimits
from gateway.ratelimit import gcra
from gateway.ratelimit.decision import CONCURRENCY_RETRY_US, Decision, LimitKind

RATE_LIMITS: tuple[tuple[LimitKind, int], ...] = (
    ("requests", gcra.MINUTE_US), ("tokens_per_minute", gcra.MINUTE_US),
    ("tokens_per_day", gcra.DAY_US),
)


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    account_id: str
    limits: TierLimits
    cost: int
    slot: str
    lease_us: int
    now_us: int | None = None

    def __post_init__(self) -> None:
        # Defence in depth: a negative cost would move the token TATs into the past, crediting
        # the account (and erasing its debt). The edge refuses such requests; so does this.
        if self.cost < 0:
            raise ValueError("a rate-limit cost is never negative")


class Backend(Protocol):
    async def admit(self, request: AdmitRequest) -> Decision:
        ...

    async def settle(
        self, account_id: str, limits: TierLimits, slot: str, reserved: int, used: int | None,
        now_us: int | None = None,
    ) -> None:
        ...

    async def renew(
        self, slots: Sequence[tuple[str, str]], lease_us: int, now_us: int | None = None
    ) -> None:
        ...

    async def probe(self) -> None:
        """Returns once the backend answers; raises a backend error when it does not."""
        ...


def wall_clock_us() -> int:
    return time.time_ns() // 1000


_LIMIT_FIELDS: dict[LimitKind, str] = {
    "requests": "requests_per_minute", "tokens_per_minute": "tokens_per_minute",
    "tokens_per_day": "tokens_per_day", "concurrency": "max_concurrent",
}


def limit_of(limits: TierLimits, kind: LimitKind) -> int:
    value: int = getattr(limits, _LIMIT_FIELDS[kind])  # no dict built per call: hot path
    return value


class InProcessBackend:
    """Limits held in this process: for the demo, single-process use, and the fail-open fallback."""

    def __init__(self) -> None:
        self._tats: dict[tuple[str, LimitKind], int] = {}
        self._slots: dict[str, dict[str, int]] = {}

    async def admit(self, request: AdmitRequest) -> Decision:
        now = wall_clock_us() if request.now_us is None else request.now_us
        limits = request.limits
        slots = self._live_slots(request.account_id, now)
        over_concurrency = len(slots) >= limits.max_concurrent
        checks = {
            kind: gcra.check(self._tats.get((request.account_id, kind)), now,
                             1 if kind == "requests" else request.cost, period,
                             limit_of(limits, kind))
            for kind, period in RATE_LIMITS
        }
        allowed = not over_concurrency and all(c.allowed for c in checks.values())
        if allowed:
            for kind, _ in RATE_LIMITS:
                self._tats[(request.account_id, kind)] = checks[kind].new_tat
            slots[request.slot] = now + request.lease_us
        return decide(allowed, over_concurrency, checks, limits, now)

    async def settle(
        self, account_id: str, limits: TierLimits, slot: str, reserved: int, used: int | None,
        now_us: int | None = None,
    ) -> None:
        now = wall_clock_us() if now_us is None else now_us
        self._slots.get(account_id, {}).pop(slot, None)
        delta = settle_delta(reserved, used)
        if delta == 0:
            return
        for kind, period in RATE_LIMITS[1:]:
            self._tats[(account_id, kind)] = gcra.adjust(
                self._tats.get((account_id, kind)), now, delta, period, limit_of(limits, kind))

    async def renew(
        self, slots: Sequence[tuple[str, str]], lease_us: int, now_us: int | None = None
    ) -> None:
        now = wall_clock_us() if now_us is None else now_us
        for account_id, slot in slots:
            held = self._slots.get(account_id)
            if held is not None and slot in held:
                held[slot] = now + lease_us

    async def probe(self) -> None:
        return None  # in this process: always there

    def _live_slots(self, account_id: str, now: int) -> dict[str, int]:
        slots = self._slots.setdefault(account_id, {})
        for slot in [s for s, expiry in slots.items() if expiry <= now]:
            del slots[slot]
        return slots


def settle_delta(reserved: int, used: int | None) -> int:
    """Tokens to charge (> 0) or refund (< 0) after the fact; unknown or negative usage is
    never a refund below zero use."""
    return 0 if used is None else max(used, 0) - max(reserved, 0)


def decide(
    allowed: bool, over_concurrency: bool, checks: dict[LimitKind, gcra.Check],
    limits: TierLimits, now: int,
) -> Decision:
    failing = [kind for kind, _ in RATE_LIMITS if not checks[kind].allowed]
    rejected_by: LimitKind | None = None
    if not allowed:
        rejected_by = "concurrency" if over_concurrency else failing[0]
    retry = max([checks[k].retry_after for k in failing], default=0)
    if over_concurrency:
        retry = max(retry, CONCURRENCY_RETRY_US)
    requests_tat = _tat_after(checks["requests"], allowed)
    tokens_tat = _tat_after(checks["tokens_per_minute"], allowed)
    return Decision(
        allowed=allowed, rejected_by=rejected_by, retry_after_us=0 if allowed else retry,
        should_retry=checks["tokens_per_minute"].fits and checks["tokens_per_day"].fits,
        requests_remaining=gcra.remaining(requests_tat, now, gcra.MINUTE_US,
                                          limits.requests_per_minute),
        requests_reset_us=gcra.reset_after(requests_tat, now),
        tokens_remaining=gcra.remaining(tokens_tat, now, gcra.MINUTE_US,
                                        limits.tokens_per_minute),
        tokens_reset_us=gcra.reset_after(tokens_tat, now),
    )


def _tat_after(check: gcra.Check, allowed: bool) -> int:
    return check.new_tat if allowed else check.tat
