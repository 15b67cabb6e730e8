"""Running green counts of every candidate key over the distinct pairs scored so far.

Each look adds only the new pairs: the cost of a whole run is ``keys × pairs`` hash
evaluations however many looks it takes (10,000 keys × 10,000 pairs: about half a second,
see :mod:`.scoring`).

Group evidence: a group of ``k`` keys scores ``S = sum of its members' green counts`` over the
same ``n`` pairs. Under the null the suspect's pairs do not depend on any key, and each key's
green list is an independent pseudo-random function of the pair, so the ``n·k`` indicators are
independent Bernoulli(``gamma``) and ``S ~ Binomial(n·k, gamma)`` (checked empirically in
``tests/suspect/test_statistics.py``: no over-dispersion across keys on the same pairs). A
campaign that split its harvest over ``k`` accounts leaves ~1/k of the mark under each key;
summing recovers it with a ``sqrt(k)`` penalty in z rather than ``k``.
"""

from __future__ import annotations

import numpy as np

from gateway.suspect.candidates import Candidates
from gateway.suspect.pairs import Ints
from gateway.suspect.scoring import green_counts_fast


class Evidence:
    """Pairs scored (``n``) and each key's green count among them (``green``)."""

    def __init__(self, candidates: Candidates, gamma: float) -> None:
        self.candidates = candidates
        self.gamma = gamma
        self.n = 0
        self.green: Ints = np.zeros(len(candidates.account_ids), np.int64)

    def add(self, ctx: Ints, tokens: Ints) -> None:
        """Score new distinct pairs (never ones added before: see :class:`PairSet`)."""
        if tokens.size == 0 or len(self.green) == 0:
            self.n += int(tokens.size)
            return
        self.green += green_counts_fast(ctx, tokens, self.candidates.keys, self.gamma)
        self.n += int(tokens.size)

    def group_green(self) -> dict[str, tuple[int, int]]:
        """Each group's ``(summed green count, trials n·k)``."""
        return {name: (int(self.green[idx].sum()), self.n * len(idx))
                for name, idx in self.candidates.groups.items()}
