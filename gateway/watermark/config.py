"""Watermark parameters shared by generation and detection (both sides must agree)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WatermarkConfig:
    """``gamma``: green fraction of the vocabulary; ``delta``: logit boost of green tokens;
    ``width``: tokens of context hashed into each step's seed (more = more unique (context,
    token) pairs on byte-level text, less = more robust to edits)."""

    gamma: float = 0.25
    delta: float = 2.0
    width: int = 4

    def __post_init__(self) -> None:
        if not 0.0 < self.gamma < 1.0:
            raise ValueError("gamma must be in (0, 1)")
        if self.delta < 0:
            raise ValueError("delta must be >= 0")
        if not 1 <= self.width <= 16:
            raise ValueError("width must be in [1, 16]")
