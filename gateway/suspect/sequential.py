"""The sequential test: after each batch of queries ("a look"), is some account or group
attributed at level ``alpha``, correcting over every hypothesis and every look?

- **Over keys, groups and views** (Bonferroni): ``H`` = (candidate keys + groups) × views
  (the pair selections of :mod:`.pairs`); the best of ``H`` one-sided binomial p-values is
  multiplied by ``H``.
- **Over looks** (a union bound with equal alpha spending): the run fixes its maximum number of
  looks ``L`` before the first query (``ceil(max_queries / queries_per_look)``) and spends
  ``alpha / L`` at each. The reported corrected p is ``min(1, p × H × L)``; attributing when it
  is ``< alpha`` bounds the chance that *any* look attributes *any* innocent account by
  ``alpha``, whatever the dependence between looks (they are nested, so this is conservative:
  it costs a factor ``L``, ``log10 L`` decades). Optional stopping is therefore safe, and so is
  stopping early for futility (not done: a run that does not attribute spends its budget).
- **Clearing is not a proof of innocence.** A run that ends without attribution reports the
  smallest green-rate excess it would have detected with 90% power at its final ``n`` (normal
  approximation): "not attributed, and an excess ≥ x would have shown".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from gateway.suspect.binomial import log10_upper_tail, log10_upper_tails
from gateway.suspect.evidence import Evidence


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """One account (``kind`` "account") or group ("group") under one view (pairs seen at least
    ``min_count`` times) at one look. ``log10_p`` is the raw one-sided binomial tail;
    ``log10_p_corrected`` adds ``log10(H × L)`` (capped at 0)."""

    kind: str
    name: str
    min_count: int
    green: int
    trials: int
    log10_p: float
    log10_p_corrected: float

    @property
    def green_fraction(self) -> float:
        return self.green / self.trials if self.trials else 0.0

    @property
    def p_corrected(self) -> float:
        return float(10.0 ** self.log10_p_corrected)


@dataclass(frozen=True, slots=True)
class Look:
    """The state after one look: the best hypotheses (lowest p first) and the decision."""

    index: int
    pairs: int
    queries: int
    best: tuple[Hypothesis, ...]
    attributed: tuple[Hypothesis, ...]


class SequentialTest:
    """Fixed ``max_looks`` and ``alpha``; :meth:`look` scores the evidence so far."""

    def __init__(self, alpha: float, max_looks: int, hypotheses: int, top: int = 10) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        if max_looks < 1 or hypotheses < 1:
            raise ValueError("max_looks and hypotheses must be >= 1")
        self.alpha = alpha
        self.max_looks = max_looks
        self.hypotheses = hypotheses
        self.top = top
        self.looks = 0
        self.log10_factor = math.log10(hypotheses) + math.log10(max_looks)

    def _hypothesis(self, kind: str, name: str, view: int, green: int, trials: int,
                    log10_p: float) -> Hypothesis:
        return Hypothesis(kind, name, view, green, trials, log10_p,
                          min(0.0, log10_p + self.log10_factor))

    def _view(self, view: int, evidence: Evidence) -> list[Hypothesis]:
        ids = evidence.candidates.account_ids
        found: list[Hypothesis] = []
        if len(ids):
            tails = log10_upper_tails(evidence.n, evidence.green, evidence.gamma)
            order = np.argsort(tails, kind="stable")[: self.top]
            found += [self._hypothesis("account", ids[i], view, int(evidence.green[i]),
                                       evidence.n, float(tails[i])) for i in order]
        for name, (green, trials) in evidence.group_green().items():
            found.append(self._hypothesis("group", name, view, green, trials,
                                          log10_upper_tail(trials, green, evidence.gamma)))
        return found

    def look(self, views: Sequence[tuple[int, Evidence]], queries: int) -> Look:
        """Score the evidence of every ``(min_count, evidence)`` view (``hypotheses`` must
        count them all); raises when called more than ``max_looks`` times (the correction
        would no longer hold). ``Look.pairs`` is the first view's."""
        if self.looks >= self.max_looks:
            raise RuntimeError("more looks than the correction was planned for")
        self.looks += 1
        scored = sorted((h for view, evidence in views for h in self._view(view, evidence)),
                        key=lambda h: h.log10_p)
        named: dict[tuple[str, str], Hypothesis] = {}
        for h in scored:  # each account or group once, under its strongest view
            named.setdefault((h.kind, h.name), h)
        found = list(named.values())
        threshold = math.log10(self.alpha)
        hits = tuple(h for h in found if h.log10_p_corrected < threshold)
        return Look(self.looks, views[0][1].n if views else 0, queries, tuple(found[: self.top]),
                    hits)

    def detectable_excess(self, pairs: int, gamma: float, power: float = 0.9) -> float | None:
        """The green-rate excess over ``gamma`` a single key would be attributed with at
        ``power`` after ``pairs`` pairs (normal approximation); None before any pair."""
        if pairs == 0:
            return None
        level = self.alpha / 10.0 ** self.log10_factor
        z = -NormalDist().inv_cdf(max(level, 1e-300)) + NormalDist().inv_cdf(power)
        return z * math.sqrt(gamma * (1.0 - gamma) / pairs)
