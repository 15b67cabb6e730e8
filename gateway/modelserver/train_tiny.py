"""Train the default tiny byte-level model on the standard library's docstrings.

Every Python installation has that text, so the model needs no download, and its next-token
distributions are real (learned) rather than random — which the watermark's power and quality
figures depend on. The shipped artifact was made by ``gateway train-tiny-model`` with the
defaults below; tests train a toy version in seconds with ``steps`` and ``n_embd`` turned down.
"""

from __future__ import annotations

import ast
import math
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gateway.tokenizer.core import BYTE_EOS, BYTE_VOCAB, ByteTokenizer

SKIP_PARTS = frozenset({"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3",
                        "turtledemo", "__pycache__", "ensurepip"})


@dataclass(frozen=True)
class TinyConfig:
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_positions: int = 256
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 1000
    lr: float = 3e-3
    seed: int = 0
    max_bytes: int = 6_000_000


def stdlib_docstrings(root: Path | None = None) -> Iterator[str]:
    """Module, class and function docstrings of the stdlib's ``.py`` files, in a fixed order."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    for path in sorted(base.rglob("*.py")):
        if SKIP_PARTS.intersection(path.relative_to(base).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 40:
                    yield doc


def corpus_tokens(max_bytes: int) -> torch.Tensor:
    tok = ByteTokenizer()
    ids: list[int] = []
    for doc in stdlib_docstrings():
        ids.extend(tok.encode(doc))
        ids.append(BYTE_EOS)
        if len(ids) >= max_bytes:
            break
    return torch.tensor(ids[:max_bytes], dtype=torch.long)


def new_model(config: TinyConfig) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(
        vocab_size=BYTE_VOCAB, n_positions=config.n_positions, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, bos_token_id=BYTE_EOS,
        eos_token_id=BYTE_EOS, pad_token_id=BYTE_EOS,
    ))


def train(config: TinyConfig, out: Path, log_every: int = 100) -> float:
    """Train, save ``out`` (safetensors, bf16 weights, byte tokenizer); the final train loss."""
    torch.manual_seed(config.seed)
    data = corpus_tokens(config.max_bytes)
    model = new_model(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(config.seed)
    loss_value = math.nan
    for step in range(config.steps):
        lr = config.lr * min(1.0, (step + 1) / 50) * 0.5 * (
            1 + math.cos(math.pi * step / max(1, config.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(data) - config.seq_len, (config.batch_size,),
                               generator=generator)
        batch = torch.stack([data[s:s + config.seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss  # the model shifts labels itself
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = float(loss.detach())
        if log_every and step % log_every == 0:
            print(f"step {step} loss {loss_value:.3f} ({loss_value / math.log(2):.2f} bits/byte)",
                  flush=True)
    save(model, out)
    return loss_value


def save(model: Any, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    model.to(torch.float32)
    ByteTokenizer().save(out)
