"""The one keyed hash behind the watermark: shared by the processor (torch, CPU or GPU), the
detector and attribution (numpy), and the fused GPU kernel (``bench/gpu_watermark.py``).

Every value is a non-negative 32-bit integer carried in an int64 array, and every operation is
``^``, ``>>``, ``+``, ``*`` by a constant below 2**27, or ``&`` — so no intermediate exceeds 2**63,
and numpy, torch on any device, and uint32 arithmetic in a kernel all give the same bits. The
functions take numpy arrays or torch tensors alike.

Green list: token ``v`` is green at a step whose seed is ``s`` iff
``mix(s ^ token_hash(v)) < gamma * 2**32``, where ``s = step_seed(key, context_hash(previous
width tokens))``. Nothing here permutes the vocabulary:
``token_hash`` is computed once per vocabulary and each step costs a few elementwise operations.
"""

from __future__ import annotations

from typing import Any, TypeVar

MASK = 0xFFFFFFFF
MULT = 0x045D9F3B  # < 2**27: a 32-bit value times this stays below 2**59
TOKEN_SALT = 0x2545F491
NO_TOKEN = -1  # context slot before the start of the text; hashed as 0

A = TypeVar("A")


def mix(x: Any) -> Any:
    """A 32-bit avalanche hash (two multiply–xorshift rounds) on int64 arrays in [0, 2**32)."""
    x = (((x >> 16) ^ x) * MULT) & MASK
    x = (((x >> 16) ^ x) * MULT) & MASK
    return (x >> 16) ^ x


def mix_int(x: int) -> int:
    """:func:`mix` on a Python int (reference and scalar uses)."""
    x &= MASK
    x = (((x >> 16) ^ x) * MULT) & MASK
    x = (((x >> 16) ^ x) * MULT) & MASK
    return (x >> 16) ^ x


def context_hash(context: Any, width: int) -> Any:
    """Fold the last ``width`` tokens (shape ``(..., width)``, oldest first, ``NO_TOKEN`` where
    the text had not begun) into one 32-bit value per step. Independent of the key, so the
    detector computes it once however many keys it tries."""
    value = context[..., -1] * 0 + 0x5BD1E995
    for j in range(1, width + 1):
        token = context[..., -j] + 1  # NO_TOKEN → 0
        value = mix(value ^ ((token * 0x01000193 + j) & MASK))
    return value


def step_seed(key_hi: Any, key_lo: Any, ctx_hash: Any) -> Any:
    """The seed of one step under one key. Both key words enter through separate mixes, so
    testing a guess of the key takes all 64 bits at once."""
    return mix(mix(key_hi ^ ctx_hash) ^ key_lo)


def token_hash(token_ids: A) -> A:
    """Per-vocabulary-entry hash; computed once per vocabulary, not per step."""
    result: A = mix((token_ids + TOKEN_SALT) & MASK)  # type: ignore[operator]
    return result


def green_threshold(gamma: float) -> int:
    """Tokens whose final hash is below this are green; the green fraction is ``gamma``."""
    if not 0.0 < gamma < 1.0:
        raise ValueError("gamma must be in (0, 1)")
    return round(gamma * 2**32)


def is_green(seed: Any, hashed_tokens: Any, threshold: int) -> Any:
    """Green membership of ``hashed_tokens`` at steps with ``seed`` (broadcasting)."""
    return mix(seed ^ hashed_tokens) < threshold
