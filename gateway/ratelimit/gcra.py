"""GCRA (generic cell rate algorithm) in integer microseconds: the reference for the Lua script.

Why GCRA: it is a rolling limit with no window edges (a client that spent its minute at 0:59 cannot
spend it again at 1:01), it needs one number per limit (the theoretical arrival time, TAT), and a
request's cost may be any amount (tokens). A limit of L per period P admits a burst of L and then
L per P, refilled continuously — OpenAI's documented semantics. ``retry_after`` is exact: at
``now + retry_after`` the same request is admitted if nothing else was spent meanwhile.

Every expression here is written exactly as in ``redis_scripts.py`` (same operations, same order,
doubles throughout), so the Redis and in-process backends decide identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MINUTE_US = 60_000_000
DAY_US = 86_400_000_000


def increment(cost: float, period: int, limit: int) -> int:
    """The TAT advance for ``cost`` units: cost × (period / limit), rounded up. A limit of 0
    admits nothing (the advance exceeds any burst)."""
    if limit <= 0:
        return period + 1
    return math.ceil(float(cost) * float(period) / float(limit))


@dataclass(frozen=True, slots=True)
class Check:
    allowed: bool
    tat: int  # the current TAT, never before now
    new_tat: int  # the TAT after admitting this request
    retry_after: int
    fits: bool  # False when the cost exceeds the whole burst: waiting can never help


def check(stored_tat: int | None, now: int, cost: float, period: int, limit: int) -> Check:
    cost = max(cost, 0)  # never a credit, whatever the caller passes
    tat = now if stored_tat is None or stored_tat < now else stored_tat
    step = increment(cost, period, limit)
    new_tat = tat + step
    allow_at = new_tat - period
    fits = step <= period
    if allow_at > now:
        return Check(False, tat, new_tat, allow_at - now, fits)
    return Check(True, tat, new_tat, 0, fits)


def remaining(tat: int, now: int, period: int, limit: int) -> int:
    """Units that could be spent right now."""
    used = max(tat - now, 0)
    return max(math.floor(float(period - used) * float(max(limit, 0)) / float(period)), 0)


def reset_after(tat: int, now: int) -> int:
    """Time until the limit is fully replenished."""
    return max(tat - now, 0)


def adjust(stored_tat: int | None, now: int, delta: float, period: int, limit: int) -> int:
    """Charge (``delta`` > 0) or refund (``delta`` < 0) tokens after the fact. A charge may push
    the TAT beyond the burst (debt); a refund never moves it before ``now``."""
    tat = now if stored_tat is None else stored_tat
    step = increment(abs(delta), period, limit)
    if delta > 0:
        return max(tat, now) + step
    return max(tat - step, now)
