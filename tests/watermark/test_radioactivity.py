"""Radioactivity in miniature (the full measurement is ``bench/watermark/radioactivity.py``): a
student distilled from a watermarked teacher's outputs generates text that carries the teacher's
key and is attributed to the harvesting account; a control distilled from the same teacher's
unwatermarked outputs does not."""

from __future__ import annotations

import torch

from bench.watermark.radioactivity import score
from gateway.watermark.attribution import KeyRing
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, keys_tensor

SECRET = b"test-radioactivity-secret-0123456789ab"
V = 64
CONFIG = WatermarkConfig(gamma=0.25, delta=4.0, width=1)  # a bigram teacher, a strong mark


def sample(table: torch.Tensor, rows: int, length: int, seed: int,
           key: tuple[int, int] | None = None) -> list[list[int]]:
    """Sequences from a bigram model's logit ``table``, watermarked with ``key`` if given."""
    generator = torch.Generator().manual_seed(seed)
    processor = WatermarkProcessor(CONFIG, V)
    tokens = torch.randint(0, V, (rows,), generator=generator)
    out = [tokens]
    for _ in range(length):
        logits = table[tokens]
        if key is not None:
            logits = processor(logits, tokens[:, None], keys_tensor([key] * rows))
        tokens = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
        out.append(tokens)
    return torch.stack(out, 1).tolist()


def distil(texts: list[list[int]]) -> torch.Tensor:
    """A bigram student fitted to ``texts``: the maximum-likelihood solution of the next-token
    loss (with add-one smoothing), i.e. what training on the outputs converges to."""
    ids = torch.tensor(texts)
    counts = torch.ones(V, V)
    counts.index_put_((ids[:, :-1].reshape(-1), ids[:, 1:].reshape(-1)),
                      torch.ones(ids[:, 1:].numel()), accumulate=True)
    return (counts / counts.sum(-1, keepdim=True)).log()


def test_a_student_of_watermarked_outputs_carries_the_harvesters_mark() -> None:
    teacher = torch.randn(V, V, generator=torch.Generator().manual_seed(0)) * 1.5
    accounts = [f"acct-{i}" for i in range(500)]
    ring = KeyRing(accounts, [SECRET])
    key = derive_key(SECRET, "acct-123")
    marked_student = distil(sample(teacher, 32, 100, seed=1, key=key))
    control_student = distil(sample(teacher, 32, 100, seed=1))
    marked = score(sample(marked_student, 16, 80, seed=2), key, ring, "acct-123", CONFIG)
    control = score(sample(control_student, 16, 80, seed=2), key, ring, "acct-123", CONFIG)
    assert marked["p"] < 1e-6 and marked["attributed"] == "acct-123"
    assert marked["p_corrected"] < 1e-3
    assert control["p"] > 1e-3 and control["p_corrected"] > 1e-3
