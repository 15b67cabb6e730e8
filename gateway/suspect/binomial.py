"""Exact binomial upper tails in log space, for counts far into the tail (p down to 1e-300 and
beyond, as log10) without SciPy."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from gateway.suspect.pairs import Ints

_LN10 = math.log(10.0)
Floats = npt.NDArray[np.float64]


def _lgamma(x: Floats) -> Floats:
    return np.fromiter((math.lgamma(v) for v in x.tolist()), np.float64, count=len(x))


def log10_upper_tail(trials: int, green: int, gamma: float) -> float:
    """``log10 P(X >= green)`` for ``X ~ Binomial(trials, gamma)``; 0.0 when ``green <= 0``.

    Summed over ``[green, max(green, mean) + 40 sd + 100]`` only: the terms beyond are below
    ``e**-800`` of the largest, so the sum is exact to double precision."""
    if green <= 0:
        return 0.0
    if green > trials:
        return -math.inf
    mean = trials * gamma
    sd = math.sqrt(trials * gamma * (1.0 - gamma))
    top = min(trials, int(max(green, mean) + 40 * sd + 100))
    j = np.arange(green, top + 1, dtype=np.float64)
    logpmf = (math.lgamma(trials + 1.0) - _lgamma(j + 1.0) - _lgamma(trials - j + 1.0)
              + j * math.log(gamma) + (trials - j) * math.log1p(-gamma))
    peak = float(logpmf.max())
    total = peak + math.log(float(np.exp(logpmf - peak).sum()))
    return min(0.0, total / _LN10)


def log10_upper_tails(trials: int, greens: Ints, gamma: float) -> Floats:
    """:func:`log10_upper_tail` for many counts over the same number of trials (one table)."""
    if trials == 0:
        return np.zeros(len(greens))
    g = np.arange(trials + 1, dtype=np.float64)
    lgam = _lgamma(g + 1.0)
    logpmf = lgam[trials] - lgam - lgam[::-1] + g * math.log(gamma) + (trials - g) * math.log1p(
        -gamma)
    tail = np.logaddexp.accumulate(logpmf[::-1])[::-1] / _LN10
    return np.asarray(np.minimum(0.0, tail[np.clip(greens, 0, trials)]), np.float64)
