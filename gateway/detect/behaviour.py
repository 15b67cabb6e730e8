"""How an account behaves, in a few numbers: what links the accounts of one operation when
their prompts share nothing.

Stdlib + numpy. A sybil operation that paraphrases every prompt and gives every account its own
network leaves no template to cluster on, but its accounts are driven by one script: the same
sampling parameters, prompts and answers of the same size, the same elicitation cues, the same
pacing, and they appear together. A *profile* is those medians over an account's window
(:data:`NAMES`); two profiles are *alike* when their parameters are equal and every other
number is within its tolerance (:data:`TOLERANCE`). People differ from each other on most of
them (history-laden prompts of every length, reading-and-typing pauses), so a cohort of alike
accounts born together is rare among them — and a cohort is only a campaign when its requests,
taken together as one account, score as extraction (:mod:`gateway.detect.campaign`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from gateway.detect.features import F32, FEATURE_NAMES, RequestFeatures

PARAMS: Final = ("max_tokens_log", "max_tokens_one", "logprobs", "top_logprobs",
                 "logit_bias_log", "n_log", "temperature")
"""Sampling parameters: a script sends the same ones every time, so they must be equal — except
the *size* of a ``logit_bias``, which a logit-recovery sweep varies from request to request (1
to hundreds of tokens): its use must be shared, its size only roughly (:data:`TOLERANCE`)."""
SHAPE: Final = ("prompt_chars_log", "completion_tokens_log", "output_input_ratio", "reasoning",
                "templating", "question", "code")
NAMES: Final = (*PARAMS, *SHAPE, "gap_log")
DIMS: Final = len(NAMES)
_BIAS: Final = PARAMS.index("logit_bias_log")
TOLERANCE: Final = np.array(
    # the median number of biased tokens within a factor of about six (log1p / 6)
    [0.3 if name == "logit_bias_log" else 0.02 for name in PARAMS]
    # prompt and answer lengths within a factor of about two (their features are log1p / 8),
    # the output/input ratio within a factor of 1.8, cue densities within 0.2,
    + [0.09, 0.09, 0.15, 0.2, 0.2, 0.2, 0.2]
    # and the median pause within a factor of 1.65 (natural log).
    + [0.5], dtype=np.float32)
"""Largest difference, per number, between two alike profiles."""
_INDEX: Final = [FEATURE_NAMES.index(n) for n in (*PARAMS, *SHAPE)]


def profile(items: Sequence[RequestFeatures]) -> F32:
    """Medians of the window's parameters and shape, and of the log pause between requests
    (NaN for a single request: no pacing yet, so alike to nothing); zeros for no requests."""
    out: F32 = profiles([items])[0]
    return out


def profiles(windows: Sequence[Sequence[RequestFeatures]]) -> F32:
    """:func:`profile` of many windows at once, shape ``(len(windows), DIMS)``: one padded
    array and one sort instead of a dozen numpy calls per account (the engine sketches every
    young account on every request)."""
    longest = max((len(w) for w in windows), default=0)
    if longest == 0:
        return np.zeros((len(windows), DIMS), dtype=np.float32)
    rows = np.full((len(windows), longest, len(_INDEX)), np.nan, dtype=np.float32)
    gaps = np.full((len(windows), max(longest - 1, 1)), np.nan, dtype=np.float64)
    for i, items in enumerate(windows):
        if not items:
            continue
        rows[i, :len(items)] = np.array([it.vector for it in items], dtype=np.float32)[:, _INDEX]
        if len(items) > 1:
            ts = np.sort(np.array([it.ts for it in items], dtype=np.float64))
            gaps[i, :len(items) - 1] = np.log1p(np.maximum(np.diff(ts), 0.0))
    shape = _padded_median(rows.astype(np.float64))
    pace = _padded_median(gaps[:, :, None])[:, 0]
    out: F32 = np.concatenate([shape, pace[:, None]], axis=1).astype(np.float32)
    out[[not items for items in windows]] = 0.0
    return out


def _padded_median(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Median over axis 1 of ``(n, m, d)`` ignoring NaN padding (NaN where a row has none):
    one sort, where ``np.nanmedian`` costs tens of microseconds per small array."""
    ordered = np.sort(x, axis=1)  # NaN sorts last
    count = (~np.isnan(x)).sum(axis=1)
    lo = np.maximum((count - 1) // 2, 0)[:, None, :]
    hi = np.maximum(count // 2, 0)[:, None, :]
    out = (np.take_along_axis(ordered, lo, axis=1) + np.take_along_axis(ordered, hi, axis=1))
    out = out[:, 0, :] / 2
    out[count == 0] = np.nan
    return out


def param_keys(params: F32) -> npt.NDArray[np.int32]:
    """Rows of :data:`PARAMS` values, rounded to their tolerance (a ``logit_bias``: used or not,
    since a logit sweep varies its size per request): equal rows are the same parameters."""
    keys = np.round(params / TOLERANCE[:len(PARAMS)]).astype(np.int32)
    keys[..., _BIAS] = params[..., _BIAS] > 0
    return keys


def params_key(profile_: F32) -> bytes:
    """The parameters, rounded (:func:`param_keys`): accounts can only be alike within the same
    key."""
    return param_keys(profile_[:len(PARAMS)]).tobytes()


def alike(a: F32, b: F32) -> bool:
    """Equal parameters (a ``logit_bias`` used by both or neither), every other number within
    its tolerance (NaN is alike nothing)."""
    return bool(alike_many(a, b[None, :])[0])


def alike_many(a: F32, others: F32) -> npt.NDArray[np.bool_]:
    """``alike(a, row)`` for every row of ``others`` (one vectorised comparison)."""
    close = np.abs(others - a[None, :]) <= TOLERANCE[None, :]
    same_bias = (others[:, _BIAS] > 0) == (a[_BIAS] > 0)
    out: npt.NDArray[np.bool_] = np.asarray(close.all(axis=1) & same_bias, dtype=np.bool_)
    return out
