"""Shared helpers of the watermark benches: loading the tiny model, prompts from the stdlib's
docstrings, KV-cached batched sampling with a pluggable per-step sampler, perplexity, and a
small student trainer. Bench-only code; the product path is ``gateway/``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gateway.modelserver.train_tiny import stdlib_docstrings
from gateway.tokenizer.core import BYTE_EOS

# sampler(logits (B, V) float32, history (B, T) long, generator) -> tokens (B,) long
Sampler = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def load(model_dir: Path | str) -> Any:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    return model.eval()


def docstrings(max_bytes: int = 2000) -> list[bytes]:
    return [d.encode()[:max_bytes] for d in stdlib_docstrings()]


def prompts(n: int, seed: int, length: int = 24) -> list[list[int]]:
    """``n`` distinct docstring openings of exactly ``length`` bytes (equal lengths: no padding)."""
    docs = [d for d in docstrings() if len(d) >= length]
    picks = np.random.default_rng(seed).choice(len(docs), size=n, replace=False)
    return [list(docs[i][:length]) for i in picks]


def multinomial(logits: torch.Tensor, _history: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]


@torch.inference_mode()
def generate(model: Any, prompt_ids: list[list[int]], length: int, sampler: Sampler = multinomial,
             seed: int = 0, batch: int = 64, ban_eos: bool = True) -> list[list[int]]:
    """Sample ``length`` tokens after each (equal-length) prompt, ``batch`` rows at a time, with a
    KV cache. ``sampler`` sees the model's logits (end-of-text banned) and the full history."""
    out: list[list[int]] = []
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, len(prompt_ids), batch):
        history = torch.tensor(prompt_ids[start:start + batch], dtype=torch.long)
        result = model(input_ids=history, use_cache=True)
        for _ in range(length):
            logits = result.logits[:, -1, :].float()
            if ban_eos:
                logits[:, BYTE_EOS] = -math.inf
            token = sampler(logits, history, generator)
            history = torch.cat([history, token[:, None]], dim=1)
            result = model(input_ids=token[:, None], cache=result["cache"], use_cache=True)
        width = len(prompt_ids[start])
        out.extend(history[:, width:].tolist())
    return out


@torch.inference_mode()
def step_logits(model: Any, prompt_ids: list[list[int]], texts: list[list[int]]
                ) -> list[torch.Tensor]:
    """The model's next-token logits (end-of-text banned) at every generated position:
    one ``(len(text), V)`` tensor per text."""
    out = []
    for prompt, text in zip(prompt_ids, texts, strict=True):
        ids = torch.tensor([prompt + text])
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
        logits[:, BYTE_EOS] = -math.inf
        out.append(logits)
    return out


def perplexity(model: Any, prompt_ids: list[list[int]], texts: list[list[int]]) -> float:
    """Perplexity of ``texts`` (after their prompts) under ``model``."""
    total, count = 0.0, 0
    for logits, text in zip(step_logits(model, prompt_ids, texts), texts, strict=True):
        lp = torch.log_softmax(logits, -1)
        total -= float(lp.gather(-1, torch.tensor(text)[:, None]).sum())
        count += len(text)
    return math.exp(total / count)


def substitute(text: Sequence[int], rate: float, rng: np.random.Generator) -> list[int]:
    """Replace a ``rate`` fraction of tokens by random printable bytes."""
    return [int(rng.integers(32, 127)) if rng.random() < rate else int(t) for t in text]


def finetune(model: Any, texts: list[list[int]], steps: int, batch: int = 16,
             seq_len: int = 128, lr: float = 1e-3, seed: int = 0) -> float:
    """Next-token training on random windows of ``texts``; returns the last loss."""
    rng = np.random.default_rng(seed)
    seq_len = min(seq_len, max(len(t) for t in texts))
    rows = [t for t in texts if len(t) >= seq_len]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loss_value = math.nan
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20)
        picks = rng.integers(0, len(rows), batch)
        windows = []
        for i in picks:
            start = int(rng.integers(0, len(rows[i]) - seq_len + 1))
            windows.append(rows[i][start:start + seq_len])
        ids = torch.tensor(windows)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = float(loss.detach())
    model.eval()
    return loss_value
