"""The per-account risk score: rises with evidence, decays with time. Pure arithmetic.

Each classifier score ``p`` (probability that the window is extraction) moves the risk toward
``p``: quickly upward (``RISE``), slowly downward (``FALL``), so one odd window does not flag an
account but a few in a row do, and one benign-looking window does not clear it.

Between scorings the *evidence* decays, not the probability: ``-ln(1 - risk)`` halves every
half-life. Near zero that is the risk itself halving, as before. Near one it is what keeps slow
pacing from being an alibi: thresholds fixed on real benign traffic land near 1 (0.9988), and a
probability that halved in 3 days lost 1% an hour, so an account scored hourly could never
climb past ``RISE / (1 - (1 - RISE) * decay)`` ≈ 0.9964 however certain every window was —
low-and-slow extraction (a request every 5-30 minutes) and people-paced harvesting stayed under
every threshold by arithmetic alone. In evidence terms an account at 0.9999 keeps 0.9998 over an
hour and falls below 0.99 after three days of silence. Measured on the adaptive suite
(window-v2, seed 1007): low_slow flagged 8% -> 100% of accounts, self_instruct under human
timing 0% -> 100%, held-out benign unchanged (1.49%).

Evidence rises only with coverage: a scoring whose newly covered requests were all sent by the
account before (:mod:`gateway.detect.coverage`: an evaluation harness re-running its question
set, a CI job's one prompt) moves the risk down or not at all, never up — re-asking harvests
nothing the account had not already harvested. One new request makes the scoring count; see
that module for why repeats interleaved with fresh prompts buy nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

RISE: Final = 0.75
"""Share of the way to a higher score the risk moves. Flag thresholds are fixed on real benign
traffic and land near 1 (0.5% of benign accounts, some of which score high), where the risk
needs ``log(1 - threshold) / log(1 - RISE)`` consecutive high scores: at 0.5 that was nine
scorings (40 requests) and, for accounts paced like people, the 3-day decay between scorings
kept the risk under the threshold altogether. Measured on the adaptive suite (window-v2): 0.75
leaves held-out benign flags unchanged (1.49%) and takes distill / distill_cot / prada under
human timing from 33% / 0% / 50% to 83% / 92% / 67% of accounts flagged."""
FALL: Final = 0.2
DISMISS_FACTOR: Final = 0.5
"""A dismissed flag multiplies the account's risk by this."""


@dataclass(slots=True)
class RiskState:
    risk: float = 0.0
    updated: float = 0.0
    """When ``risk`` was last computed (epoch seconds)."""
    peak_score: float = 0.0
    coverage: bytes = b""
    """:mod:`gateway.detect.coverage` state: the account's distinct requests (empty: none
    known, every request new)."""
    read: str = ""
    """Request id of the newest request (in the order the store received them) that a
    scoring has read: what came after it is unread. Not a time: requests are stored when they
    finish, so a long one started first lands after a short one started later, older by
    its time (empty: a state saved before this field, read up to ``updated``)."""


MAX_EVIDENCE: Final = 40.0
"""``-ln(1 - risk)`` of a risk of 1.0 (a float's 1 - 1e-17): keeps the arithmetic finite."""


def decayed(state: RiskState, now: float, half_life_s: float) -> float:
    """The risk at ``now``: its evidence ``-ln(1 - risk)`` halved once per ``half_life_s``."""
    if state.updated <= 0 or now <= state.updated:
        return state.risk
    evidence = min(-math.log1p(-state.risk), MAX_EVIDENCE) if state.risk < 1.0 else MAX_EVIDENCE
    return -math.expm1(-evidence * math.pow(0.5, (now - state.updated) / half_life_s))


def update(state: RiskState, score: float, now: float, half_life_s: float, *,
           novel: bool = True, coverage: bytes | None = None,
           read: str | None = None) -> RiskState:
    """The state after observing ``score`` at ``now``. ``novel``: whether the scoring covered a
    request new to the account (else a higher score does not raise the risk); ``coverage``: the
    account's coverage state after it (None: unchanged); ``read``: the newest request the
    scoring read (None: unchanged)."""
    risk = decayed(state, now, half_life_s)
    rate = (RISE if novel else 0.0) if score > risk else FALL
    risk += rate * (score - risk)
    return RiskState(min(max(risk, 0.0), 1.0), max(now, state.updated),
                     max(score, state.peak_score),
                     state.coverage if coverage is None else coverage,
                     state.read if read is None else read)
