"""Distinct ``(context hash, token)`` pairs of a suspect's replies, accumulated across queries.

Under the null (the suspect's text does not depend on our keys), each *distinct* pair is green
under a key with probability ``gamma`` independently of the others; a repeated pair has the same
outcome and would count twice, so every pair is kept once over the whole run, not per reply.

**Views.** Any rule that selects distinct pairs *from the text alone* (never looking at a key)
keeps that null. A view ``m`` scores each distinct pair once, when it has been seen ``m``
times: ``m = 1`` is every distinct pair; ``m = 4`` keeps the pairs the suspect emits often —
those where a student learned the teacher's distribution, so where radioactivity concentrates
(measured: a from-scratch student's green fraction is 0.25 on pairs seen once and 0.30-0.33 on
pairs seen 9+ times, ``bench/watermark/suspect_results.txt``).
Pairs the suspect could have copied from the prompt we sent (the same ``(context, token)``
occurs inside the prompt) are dropped, so a prompt taken from watermarked text cannot lend its
green pairs to an unwatermarked suspect that merely repeats it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from gateway.watermark.hashing import NO_TOKEN, context_hash

Ints = npt.NDArray[np.int64]
_TOKEN_BITS = 31  # context hashes are < 2**32, token ids < 2**31: one int64 per pair


def reply_pairs(prompt: Sequence[int], reply: Sequence[int], width: int) -> tuple[Ints, Ints]:
    """The ``(context hash, token)`` of every token of ``reply``, its context taken from
    ``prompt`` + ``reply`` (``NO_TOKEN`` before the start when the prompt is shorter than
    ``width``). Only reply tokens are scored: the prompt is ours, not the suspect's."""
    if not reply:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pad = [NO_TOKEN] * max(0, width - len(prompt))
    ids = np.asarray(pad + list(prompt[-width:] if width else []) + list(reply), np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(ids, width + 1)
    return context_hash(windows[:, :width], width), windows[:, width].copy()


def _pack(ctx: Ints, tokens: Ints) -> Ints:
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= 1 << _TOKEN_BITS):
        raise ValueError("token ids must be in [0, 2**31)")
    return np.asarray((ctx << _TOKEN_BITS) | tokens, np.int64)


class PairSet:
    """How often each distinct pair has been seen; :meth:`add_views` returns, per view
    ``m`` in ``min_counts``, the pairs whose count has just reached ``m`` (each pair once)."""

    def __init__(self, width: int, min_counts: Sequence[int] = (1,)) -> None:
        if not min_counts or min(min_counts) < 1:
            raise ValueError("min_counts must be >= 1")
        self.width = width
        self.min_counts = tuple(min_counts)
        self._counts: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def add_views(self, prompt: Sequence[int], reply: Sequence[int]) -> list[tuple[Ints, Ints]]:
        """Count the reply's pairs, except those occurring in ``prompt`` itself."""
        ctx, tokens = reply_pairs(prompt, reply, self.width)
        packed = _pack(ctx, tokens)
        if prompt:
            packed = np.where(np.isin(packed, _pack(*reply_pairs([], prompt, self.width))),
                              -1, packed)
        reached: list[list[int]] = [[] for _ in self.min_counts]
        counts = self._counts
        for i, value in enumerate(packed.tolist()):
            if value < 0:
                continue
            seen = counts.get(value, 0) + 1
            counts[value] = seen
            for j, m in enumerate(self.min_counts):
                if seen == m:
                    reached[j].append(i)
        return [(ctx[idx], tokens[idx]) for idx in (np.asarray(r, np.int64) for r in reached)]

    def add(self, prompt: Sequence[int], reply: Sequence[int]) -> tuple[Ints, Ints]:
        """:meth:`add_views` for the first view only."""
        return self.add_views(prompt, reply)[0]
