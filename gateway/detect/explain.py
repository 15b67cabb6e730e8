"""Top contributing signals, in plain words, for a flagged window. numpy only.

For each group of related inputs, the window is re-scored with only that group as observed and
every other group set to typical benign values (medians from training, shipped in the
artifact); the groups that score highest on their own are the reasons. One batch of
``len(GROUPS) + 2`` windows per flag — flags are rare.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from gateway.detect.scoring import Artifact, Scorer
from gateway.detect.window import SEQ_NAMES, STAT_NAMES, WindowArrays

GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "logprob / logit-bias probing (top_logprobs, logit_bias, max_tokens=1)": (
        "logprobs", "top_logprobs", "logit_bias_log", "max_tokens_one"),
    "long generated answers relative to the prompts (high output/input ratio)": (
        "completion_tokens_log", "output_input_ratio", "max_tokens_log", "n_log"),
    "prompts that elicit step-by-step reasoning": ("reasoning",),
    "templated prompts reused across requests": ("templating", "template_share",
                                                 "template_reuse"),
    "near-duplicate or perturbed queries (PRADA distance distribution)": (
        "min_distance", "near_duplicate", "distance_mean", "distance_std",
        "distance_normality", "near_duplicate_share", "clustered", "clustered_share"),
    "broad topic coverage / high prompt diversity": ("diversity", "coverage"),
    "machine-regular timing and sustained volume": ("gap_log", "gap_mean_log", "gap_std_log",
                                                    "gap_cv", "burst_share", "requests_log"),
    "prompt size and shape": ("prompt_chars_log", "prompt_words_log", "question", "code",
                              "temperature", "stream"),
    "errors and rate-limit hits": ("error", "rate_limited"),
}


def _columns(names: tuple[str, ...]) -> tuple[list[int], list[int]]:
    seq = [SEQ_NAMES.index(n) for n in names if n in SEQ_NAMES]
    stats = [i for i, s in enumerate(STAT_NAMES)
             if s in names or s.removeprefix("mean_") in names or s.removeprefix("std_") in names]
    return seq, stats


def _with(w: WindowArrays, seq_ref: np.ndarray, stats_ref: np.ndarray,
          keep: tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """The window with every group except ``keep`` (None: none) set to benign references."""
    s, st = w.seq.copy(), w.stats.copy()
    real = w.mask > 0
    for names in GROUPS.values():
        if keep is not None and names == keep:
            continue
        seq_cols, stat_cols = _columns(names)
        for c in seq_cols:
            s[real, c] = seq_ref[c]
        st[stat_cols] = stats_ref[stat_cols]
    return s, st


def _observed(w: WindowArrays, seq_ref: np.ndarray, stats_ref: np.ndarray,
              names: tuple[str, ...], artifact: Artifact) -> bool:
    """Whether the window holds anything but the benign reference in this group, among the
    inputs the artifact reads: a group the window does not show (no errors in an all-200
    window), or shows only in inputs the model never sees, is never a reason, whatever the
    model makes of its reference values in company."""
    seq_cols, stat_cols = _columns(names)
    if artifact.seq_columns:
        seq_cols = [c for c in seq_cols if c in artifact.seq_columns]
    if artifact.stat_columns:
        stat_cols = [c for c in stat_cols if c in artifact.stat_columns]
    real = w.mask > 0
    seq_differs = bool(np.any(np.abs(w.seq[real][:, seq_cols] - seq_ref[seq_cols]) > 1e-6))
    return seq_differs or bool(np.any(np.abs(w.stats[stat_cols] - stats_ref[stat_cols]) > 1e-6))


def reasons(scorer: Scorer, artifact: Artifact, w: WindowArrays, top: int = 3,
            min_gain: float = 0.05) -> list[str]:
    """Signal groups ranked by the score the window gets with *only* that group left as
    observed (all others set to typical benign values): redundancy among strong signals does not
    hide any of them, which plain occlusion would on a saturated score. Only groups the window
    actually shows (:func:`_observed`) can be reasons."""
    seq_ref = np.asarray(artifact.seq_reference, dtype=np.float32)
    stats_ref = np.asarray(artifact.stats_reference, dtype=np.float32)
    labels = [label for label, names in GROUPS.items()
              if _observed(w, seq_ref, stats_ref, names, artifact)]
    variants = [(w.seq, w.stats), _with(w, seq_ref, stats_ref, None)]
    variants += [_with(w, seq_ref, stats_ref, GROUPS[label]) for label in labels]
    out = scorer.score(np.stack([v[0] for v in variants]),
                       np.repeat(w.mask[None], len(variants), axis=0),
                       np.stack([v[1] for v in variants]))
    whole, baseline = float(out[0]), float(out[1])
    ranked = sorted(((float(o), label) for o, label in zip(out[2:], labels, strict=True)),
                    reverse=True)
    found = [f"{label} (alone scores {alone:.2f}; whole window {whole:.2f})"
             for alone, label in ranked[:top] if alone - baseline >= min_gain]
    return found or [f"the combination of signals (whole window {whole:.2f}; no single "
                     "signal stands out on its own)"]
