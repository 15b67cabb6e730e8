"""Watermark parameters shared by generation and detection (both sides must agree)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WatermarkConfig:
    """``gamma``: green fraction of the vocabulary; ``delta``: logit boost of green tokens;
    ``width``: tokens of context hashed into each step's seed (more = more unique (context,
    token) pairs on byte-level text, less = more robust to edits and more radioactive).

    Width 2, measured against 4 on the shipped model (``bench/watermark/watermark_measure.py``,
    ``bench/watermark/radioactivity.py``): a student fine-tuned on 57k harvested tokens carries
    the mark at width 2 (p 9e-17, attributed among 10,000 accounts) and not at width 4 (p 0.5);
    25% edits are still detected in 56-69% of texts (8-12% at width 4); p < 1e-6 takes 80 tokens
    (70)."""

    gamma: float = 0.25
    delta: float = 2.0
    width: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.gamma < 1.0:
            raise ValueError("gamma must be in (0, 1)")
        if self.delta < 0:
            raise ValueError("delta must be >= 0")
        if not 1 <= self.width <= 16:
            raise ValueError("width must be in [1, 16]")


def config_from_env(env: Mapping[str, str]) -> WatermarkConfig:
    """The watermark as ``GATEWAY_WATERMARK_*`` sets it, for processes that run without the
    gateway's settings (the model server, the vLLM adapter)."""
    default = WatermarkConfig()
    return WatermarkConfig(
        gamma=float(env.get("GATEWAY_WATERMARK_GAMMA", default.gamma)),
        delta=float(env.get("GATEWAY_WATERMARK_DELTA", default.delta)),
        width=int(env.get("GATEWAY_WATERMARK_CONTEXT_WIDTH", default.width)),
    )
