"""Watermark detection: a pure function of token ids and a key — no model needed.

Every scored step is one ``(previous width tokens, token)`` pair; repeated pairs are scored once,
because a repeated pair has the same green/red outcome and would otherwise inflate the score of
repetitive text (the p-value is only valid for distinct pairs). Under the null (text not
generated with this key) each distinct pair is green with probability ``gamma`` independently, so
the green count is Binomial(n, gamma) and the p-value is its exact upper tail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.watermark.config import WatermarkConfig
from gateway.watermark.hashing import (
    NO_TOKEN,
    context_hash,
    green_threshold,
    mix,
    step_seed,
    token_hash,
)

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Detection:
    """``score``: z-score of the green count; ``p_value``: exact one-sided binomial tail."""

    score: float
    p_value: float
    tokens_scored: int
    green: int


def scored_pairs(token_ids: Sequence[int] | Ints, width: int) -> tuple[Ints, Ints]:
    """Distinct ``(context hash, token)`` pairs of the text, as two aligned arrays.

    The first ``width`` tokens have no full context and are not scored (their context would
    come from a prompt the detector does not see).
    """
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    if ids.size <= width:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(ids, width + 1)
    unique = np.unique(windows, axis=0)
    return context_hash(unique[:, :width], width), unique[:, width]


def binomial_upper_tail(n: int, gamma: float) -> Floats:
    """``P(X >= g)`` for ``g = 0..n``, ``X ~ Binomial(n, gamma)``; exact, in log space."""
    if n == 0:
        return np.ones(1)
    g = np.arange(n + 1, dtype=np.float64)
    lgam = np.array([math.lgamma(k + 1.0) for k in range(n + 1)])
    logpmf = lgam[n] - lgam - lgam[::-1] + g * math.log(gamma) + (n - g) * math.log1p(-gamma)
    tail = np.logaddexp.accumulate(logpmf[::-1])[::-1]
    return np.asarray(np.minimum(1.0, np.exp(tail)), dtype=np.float64)


def z_score(green: int | Ints, n: int, gamma: float) -> Floats:
    if n == 0:
        return np.zeros(np.shape(green))
    return np.asarray((np.asarray(green, np.float64) - gamma * n)
                      / math.sqrt(n * gamma * (1 - gamma)))


def green_counts(ctx: Ints, tokens: Ints, keys: Ints, gamma: float,
                 chunk: int = 2048) -> Ints:
    """Green count of the pairs under each key (``keys``: ``(K, 2)``), vectorised over keys."""
    threshold = green_threshold(gamma)
    hashed = token_hash(tokens)
    out = np.empty(len(keys), dtype=np.int64)
    for start in range(0, len(keys), chunk):
        block = keys[start:start + chunk]
        seeds = step_seed(block[:, :1], block[:, 1:], ctx[None, :])
        out[start:start + chunk] = (mix(seeds ^ hashed[None, :]) < threshold).sum(axis=1)
    return out


def detect(token_ids: Sequence[int] | Ints, key: tuple[int, int],
           config: WatermarkConfig) -> Detection:
    """Score a text against one key."""
    ctx, tokens = scored_pairs(token_ids, config.width)
    n = int(tokens.size)
    green = int(green_counts(ctx, tokens, np.array([key], np.int64), config.gamma)[0])
    p = float(binomial_upper_tail(n, config.gamma)[green])
    return Detection(float(z_score(green, n, config.gamma)), p, n, green)


__all__ = ["NO_TOKEN", "Detection", "binomial_upper_tail", "detect", "green_counts",
           "scored_pairs", "z_score"]
