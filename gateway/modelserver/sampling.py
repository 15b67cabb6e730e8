"""One decoding step's arithmetic on a batch: logit_bias, the watermark, temperature, top_p,
seeded sampling, and the logprobs reported to the client.

Reported logprobs are those of the model's distribution after ``logit_bias`` and *before* the
watermark: returning watermarked logprobs would show a logprob-sweeping client which tokens are
green in each context, i.e. leak the watermark.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class StepOutput:
    tokens: list[int]
    logprobs: list[float]
    top: list[list[tuple[int, float]]]


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) tokens outside each row's nucleus; always keeps the top token."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = before >= top_p[:, None]
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
           generators: list[torch.Generator | None]) -> torch.Tensor:
    """One token per row; temperature 0 is greedy. Seeded rows use their own generator, so a
    seeded request gets the same tokens whatever else shares its batch."""
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    scaled = apply_top_p(scaled, top_p)
    probs = torch.softmax(scaled.float(), dim=-1).cpu()
    uniforms = torch.empty(len(generators))
    for i, generator in enumerate(generators):  # one draw per row: O(B), not O(B·V)
        uniforms[i] = torch.rand((), generator=generator)
    cdf = torch.cumsum(probs, dim=-1)
    drawn = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None]).squeeze(-1)
    drawn = drawn.clamp(max=probs.shape[-1] - 1)
    return torch.where(greedy.cpu(), logits.argmax(dim=-1).cpu(), drawn)


def report(logits: torch.Tensor, chosen: torch.Tensor, top_k: int) -> StepOutput:
    logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
    picked = logprobs.gather(-1, chosen[:, None]).squeeze(-1)
    tops: list[list[tuple[int, float]]] = [[] for _ in range(len(chosen))]
    if top_k > 0:
        values, ids = torch.topk(logprobs, min(top_k, logprobs.shape[-1]), dim=-1)
        tops = [list(zip(r_ids, r_vals, strict=True))
                for r_ids, r_vals in zip(ids.tolist(), values.tolist(), strict=True)]
    return StepOutput(chosen.tolist(), picked.tolist(), tops)
