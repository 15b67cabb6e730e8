"""The watermark as a logits processor: a whole batch per call, on the logits' device.

Per step it computes one 32-bit seed per row (account key × previous ``width`` tokens), then one
hash per (row, vocabulary entry) against a per-vocabulary table computed once — no Python loop
over tokens and no vocabulary permutation — and adds ``delta`` to the green logits.
Because the boost is additive in logit space, a step where one token already holds nearly all
the probability barely changes (the KL cost scales with the step's entropy).

The ``(B, V)`` part is the hashing module's ``mix(seed ^ token_hash)`` in 32-bit arithmetic,
bit-identical to :func:`gateway.watermark.hashing.is_green` (the int64 reference, kept here as
:meth:`WatermarkProcessor.reference_green_mask`):

* the first round's ``x ^ (x >> 16)`` is linear over XOR, so it is split into a per-row term and
  a per-vocabulary term computed once (``token_terms``);
* uint32 values are carried in int32 (multiplication wraps mod 2**32 the same way; a logical
  shift is an arithmetic shift masked to 16 bits; an unsigned comparison is a signed one after
  flipping the sign bit);
* the final ``x ^ (x >> 16)`` leaves the high 16 bits unchanged, so when the green threshold is a
  multiple of 2**16 (``gamma`` a multiple of 2**-16, e.g. 0.25) the comparison needs only ``x``;
* on CPU the batch is processed a few rows at a time, in place, so the temporaries stay in
  cache (on an accelerator, the whole batch per kernel; the fused kernel is
  ``bench/gpu_watermark.py``).

``compile=True`` (optional, off by default) runs the same arithmetic as one ``torch.compile``d
expression — on CPU, one fused loop over the logits, several times faster again. It costs a
compilation (tens of seconds) on first use, and is guarded: its first result is compared with the
eager path's, and on any difference or error the processor falls back to eager for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from gateway.watermark.config import WatermarkConfig
from gateway.watermark.hashing import (
    MULT,
    NO_TOKEN,
    context_hash,
    green_threshold,
    mix,
    step_seed,
    token_hash,
)

log = logging.getLogger("gateway.watermark")
SIGN = -(2**31)  # the int32 sign bit
CHUNK_ELEMENTS = 1 << 17  # int32 elements per in-place chunk (512 KiB): stays in L2


def fused_watermark(logits: torch.Tensor, row_terms: torch.Tensor, token_terms: torch.Tensor,
                    active: torch.Tensor, signed_threshold: int, delta: float,
                    high_only: bool) -> torch.Tensor:
    """The processor's arithmetic as one expression (for ``torch.compile``)."""
    x = (row_terms[:, None] ^ token_terms[None, :]) * MULT
    x = (x ^ ((x >> 16) & 0xFFFF)) * MULT
    if not high_only:
        x = x ^ ((x >> 16) & 0xFFFF)
    green = ((x ^ SIGN) < signed_threshold) & active[:, None]
    return torch.where(green, logits + delta, logits)


def context_window(sequences: list[list[int]], width: int) -> torch.Tensor:
    """The last ``width`` tokens of each sequence, left-padded with ``NO_TOKEN``: ``(B, width)``."""
    rows = [([NO_TOKEN] * width + seq[-width:])[-width:] for seq in sequences]
    return torch.tensor(rows, dtype=torch.long).reshape(len(sequences), width)


def keys_tensor(keys: list[tuple[int, int]]) -> torch.Tensor:
    return torch.tensor(keys, dtype=torch.long).reshape(len(keys), 2)


def as_int32(values: torch.Tensor) -> torch.Tensor:
    """uint32 values carried in int64 → the same 32 bits as int32."""
    return (values - ((values >> 31) << 32)).to(torch.int32)


class WatermarkProcessor:
    """``processor(logits, context, keys, active)`` → watermarked logits (a new tensor).

    ``logits``: ``(B, V)`` float; ``context``: ``(B, width)`` long (see :func:`context_window`);
    ``keys``: ``(B, 2)`` long (see :func:`gateway.watermark.keys.derive_key`); ``active``:
    optional ``(B,)`` bool, rows left unchanged where false.
    """

    def __init__(self, config: WatermarkConfig, vocab_size: int,
                 device: torch.device | str = "cpu", compile: bool = False) -> None:
        self.config = config
        self.vocab_size = vocab_size
        self.threshold = green_threshold(config.gamma)
        self.token_hashes = token_hash(torch.arange(vocab_size, dtype=torch.long, device=device))
        self.token_terms = as_int32(self.token_hashes ^ (self.token_hashes >> 16))
        self._high_only = self.threshold % (1 << 16) == 0 and self.threshold < 2**32
        self._signed_threshold = self.threshold + SIGN  # unsigned order → signed order
        self._compiled: Callable[..., Any] | None = None
        self._compiled_checked = False
        if compile and self.threshold < 2**32:
            self._compiled = torch.compile(fused_watermark, dynamic=True)

    def seeds(self, context: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``(B,)`` int64: each row's step seed (:func:`gateway.watermark.hashing.step_seed`)."""
        device = self.token_hashes.device
        ctx = context_hash(context.to(device), self.config.width)
        keys = keys.to(device)
        seeds: torch.Tensor = step_seed(keys[:, 0], keys[:, 1], ctx)
        return seeds

    def reference_green_mask(self, context: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The int64 reference of :meth:`green_mask` (the hashing module, literally)."""
        seeds = self.seeds(context, keys)
        green: torch.Tensor = mix(seeds[:, None] ^ self.token_hashes[None, :]) < self.threshold
        return green

    def green_mask(self, context: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``(B, V)`` bool: the green list of each row's next step."""
        seeds = self.seeds(context, keys)
        row_terms = as_int32(seeds ^ (seeds >> 16))
        vocab = self.token_terms.shape[0]
        green = torch.empty((len(seeds), vocab), dtype=torch.bool, device=seeds.device)
        if self.threshold >= 2**32:  # gamma rounds to 1: every token is green
            return green.fill_(True)
        rows = max(1, CHUNK_ELEMENTS // max(1, vocab))
        if seeds.device.type != "cpu":  # accelerators: one launch per operation, whole batch
            rows = max(1, len(seeds))
        x = torch.empty((min(rows, len(seeds)), vocab), dtype=torch.int32, device=seeds.device)
        y = torch.empty_like(x)
        for start in range(0, len(seeds), rows):
            stop = min(start + rows, len(seeds))
            xs, ys = x[:stop - start], y[:stop - start]
            torch.bitwise_xor(row_terms[start:stop, None], self.token_terms[None, :], out=xs)
            xs.mul_(MULT)  # round 1 (its shift-xor was split into the two terms)
            torch.bitwise_right_shift(xs, 16, out=ys)
            ys.bitwise_and_(0xFFFF)
            xs.bitwise_xor_(ys).mul_(MULT)  # round 2
            if not self._high_only:  # the final shift-xor only changes the low 16 bits
                torch.bitwise_right_shift(xs, 16, out=ys)
                ys.bitwise_and_(0xFFFF)
                xs.bitwise_xor_(ys)
            xs.bitwise_xor_(SIGN)
            torch.lt(xs, self._signed_threshold, out=green[start:stop])
        return green

    def __call__(self, logits: torch.Tensor, context: torch.Tensor, keys: torch.Tensor,
                 active: torch.Tensor | None = None) -> torch.Tensor:
        vocab = logits.shape[-1]
        if vocab > self.vocab_size:
            raise ValueError(f"logits have {vocab} entries; the processor was built for "
                             f"{self.vocab_size}")
        if self._compiled is not None:
            out = self._call_compiled(logits, context, keys, active)
            if out is not None:
                return out
        return self._eager(logits, context, keys, active)

    def _call_compiled(self, logits: torch.Tensor, context: torch.Tensor, keys: torch.Tensor,
                       active: torch.Tensor | None) -> torch.Tensor | None:
        assert self._compiled is not None
        seeds = self.seeds(context, keys)
        rows = torch.ones(len(seeds), dtype=torch.bool, device=seeds.device)
        if active is not None:
            rows = active.to(seeds.device)
        try:
            out: torch.Tensor = self._compiled(
                logits, as_int32(seeds ^ (seeds >> 16)),
                self.token_terms[:logits.shape[-1]], rows, self._signed_threshold,
                self.config.delta, self._high_only)
        except Exception:
            log.warning("compiled watermark failed; using the eager path", exc_info=True)
            self._compiled = None
            return None
        if not self._compiled_checked:
            self._compiled_checked = True
            if not torch.equal(out, self._eager(logits, context, keys, active)):
                log.warning("compiled watermark differs from the eager path; not using it")
                self._compiled = None
                return None
        return out

    def _eager(self, logits: torch.Tensor, context: torch.Tensor, keys: torch.Tensor,
               active: torch.Tensor | None) -> torch.Tensor:
        vocab = logits.shape[-1]
        green = self.green_mask(context, keys)[:, :vocab]
        if active is not None:
            green &= active.to(green.device)[:, None]
        return torch.add(logits, green, alpha=self.config.delta)
