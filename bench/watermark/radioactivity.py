"""Radioactivity (Sander et al. 2024): a student fine-tuned on the teacher's watermarked outputs
carries the watermark into its *own* generations; a control student fine-tuned on unwatermarked
outputs of the same teacher does not.

1. The teacher (the shipped tiny model) answers ``--samples`` docstring prompts twice: once
   watermarked with the harvesting account's key, once plain (the harvested data sets).
2. One student base (``--student-init scratch``: a small GPT-2 pretrained briefly on the
   stdlib's docstrings with its own seed; ``teacher``: a copy of the teacher) is copied twice and
   fine-tuned ``--steps`` steps on each data set.
3. Each student generates ``--gen-samples`` texts from fresh prompts, *without* any watermark.
   Their distinct (context, token) pairs, deduplicated across all of a student's texts (the
   paper's dedup, which keeps the p-value valid), are scored against the harvester's key and
   attributed among ``--accounts`` accounts (Bonferroni-corrected). Scored twice: all pairs
   (the closed-model setting: nothing but the student's text), and only pairs whose context also
   occurs in the texts served to the harvester (the paper's filter, for when the gateway kept what
   it served; the filter depends on contexts only, so the null stays Binomial(n, gamma)).

    python -m bench.watermark.radioactivity                       # ~4 minutes on 2 CPU cores
    python -m bench.watermark.radioactivity --samples 128 --steps 150 --gen-samples 32   # ~1 minute
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from bench.watermark.watermark_support import (
    Sampler,
    finetune,
    generate,
    load,
    multinomial,
    prompts,
)
from gateway.modelserver.config import DEFAULT_MODEL_DIR
from gateway.modelserver.train_tiny import TinyConfig, corpus_tokens, new_model
from gateway.watermark.attribution import KeyRing
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.detector import binomial_upper_tail, green_counts
from gateway.watermark.hashing import context_hash
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, keys_tensor

SECRET = b"bench-radioactivity-secret-0123456789ab"
Ints = npt.NDArray[np.int64]


def kgw_sampler(config: WatermarkConfig, key: tuple[int, int], vocab: int) -> Sampler:
    processor = WatermarkProcessor(config, vocab)
    key_row = keys_tensor([key])

    def sample(logits: torch.Tensor, history: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        marked = processor(logits, history[:, -config.width:],
                           key_row.expand(len(logits), 2))
        return multinomial(marked, history, generator)

    return sample


def pooled_pairs(texts: list[list[int]], width: int) -> tuple[Ints, Ints]:
    """Distinct (context hash, token) pairs over all ``texts`` together (no pair spans two)."""
    windows = [np.lib.stride_tricks.sliding_window_view(np.asarray(t, np.int64), width + 1)
               for t in texts if len(t) > width]
    unique = np.unique(np.concatenate(windows), axis=0)
    return context_hash(unique[:, :width], width), unique[:, width]


def served_contexts(texts: list[list[int]], width: int) -> Ints:
    """Context hashes of every ``width``-token window of the served texts (the filter)."""
    windows = [np.lib.stride_tricks.sliding_window_view(np.asarray(t, np.int64), width)
               for t in texts if len(t) >= width]
    hashed: Ints = np.unique(context_hash(np.concatenate(windows), width))
    return hashed


def score(texts: list[list[int]], key: tuple[int, int], ring: KeyRing, owner: str,
          config: WatermarkConfig, only_contexts: Ints | None = None) -> dict[str, Any]:
    ctx, tokens = pooled_pairs(texts, config.width)
    if only_contexts is not None:
        keep = np.isin(ctx, only_contexts)
        ctx, tokens = ctx[keep], tokens[keep]
    n = len(tokens)
    tail = binomial_upper_tail(n, config.gamma)
    own = int(green_counts(ctx, tokens, np.array([key], np.int64), config.gamma)[0])
    start = time.perf_counter()
    counts = green_counts(ctx, tokens, ring.keys, config.gamma)
    scan = time.perf_counter() - start
    best = int(np.argmax(counts))
    rank = int((counts > counts[ring.account_ids.index(owner)]).sum())
    return {"pairs": n, "green_fraction": own / max(1, n), "p": float(tail[own]),
            "attributed": ring.account_ids[best], "p_corrected": min(1.0, float(
                tail[counts[best]]) * len(ring)), "owner_rank": rank, "scan_s": scan}


@torch.inference_mode()
def green_mass(model: Any, texts: list[list[int]], key: tuple[int, int],
               config: WatermarkConfig) -> float:
    """Diagnostic (white-box, teacher-forced on the served texts): the model's mean probability
    on the harvester's green list at each position — what fine-tuning moved, if anything."""
    processor = WatermarkProcessor(config, int(model.config.vocab_size))
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([text])
        probs = torch.softmax(model(input_ids=ids).logits[0, config.width - 1:-1].float(), -1)
        windows = ids[0].unfold(0, config.width, 1)[:probs.shape[0]]
        green = processor.green_mask(windows, keys_tensor([key] * len(windows)))
        total += float((probs * green).sum())
        count += len(windows)
    return total / count


def student_base(kind: str, teacher: Any, args: argparse.Namespace) -> Any:
    if kind == "teacher":
        return copy.deepcopy(teacher)
    torch.manual_seed(args.seed + 1)
    model = new_model(TinyConfig(n_embd=args.student_embd, n_layer=args.student_layers,
                                 n_head=4))
    if args.pretrain_steps:
        data = corpus_tokens(args.pretrain_bytes).tolist()
        rows = [data[i:i + 512] for i in range(0, len(data) - 512, 512)]
        finetune(model, rows, args.pretrain_steps, lr=3e-3, seed=args.seed + 2)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--samples", type=int, default=256, help="harvested teacher texts")
    parser.add_argument("--length", type=int, default=224, help="tokens per teacher text")
    parser.add_argument("--student-init", choices=("scratch", "teacher"), default="scratch")
    parser.add_argument("--student-embd", type=int, default=96)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--pretrain-bytes", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps (batch 16)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gen-samples", type=int, default=64)
    parser.add_argument("--gen-length", type=int, default=224)
    parser.add_argument("--delta", type=float, default=2.0)
    parser.add_argument("--gamma", type=float, default=0.25)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="", help="keep the teacher's texts here")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    began = time.perf_counter()
    config = WatermarkConfig(gamma=args.gamma, delta=args.delta, width=args.width)
    accounts = [f"acct-{i:05d}" for i in range(args.accounts)]
    owner = accounts[args.accounts // 3]
    key = derive_key(SECRET, owner)
    ring = KeyRing(accounts, [SECRET])
    teacher = load(Path(args.teacher))
    vocab = int(teacher.config.vocab_size)
    asked = prompts(args.samples, seed=args.seed)
    cache = Path(args.cache_dir) / (f"teacher-{args.samples}-{args.length}-{config.gamma}-"
                                    f"{config.delta}-{config.width}-{args.seed}.npz")
    if args.cache_dir and cache.exists():
        saved = np.load(cache)
        marked, plain = saved["marked"].tolist(), saved["plain"].tolist()
    else:
        marked = generate(teacher, asked, args.length, kgw_sampler(config, key, vocab), seed=1)
        plain = generate(teacher, asked, args.length, multinomial, seed=1)
        if args.cache_dir:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, marked=np.array(marked), plain=np.array(plain))
    seen = served_contexts([p + t for p, t in zip(asked, marked, strict=True)], config.width)
    print(f"teacher data: {args.samples} x {args.length} tokens each, watermarked (gamma "
          f"{config.gamma}, delta {config.delta}, width {config.width}) and plain; "
          f"{time.perf_counter() - began:.0f} s")
    base = student_base(args.student_init, teacher, args)
    fresh = prompts(args.gen_samples, seed=args.seed + 100)
    print(f"student: {args.student_init} ({sum(p.numel() for p in base.parameters()):,} "
          f"params), {args.steps} fine-tuning steps x 16 x 128 tokens; its generations: "
          f"{args.gen_samples} x {args.gen_length} tokens from fresh prompts, unwatermarked")
    results = {}
    for name, data in (("watermarked-data student", marked), ("control student", plain)):
        student = copy.deepcopy(base)
        loss = finetune(student, [p + t for p, t in zip(asked, data, strict=True)],
                        args.steps, lr=args.lr, seed=args.seed + 3)
        texts = generate(student, fresh, args.gen_length, multinomial, seed=2)
        served = [p + t for p, t in zip(asked[:32], marked[:32], strict=True)]
        print(f"{name}: final loss {loss:.3f}; green mass on the served texts (teacher-forced "
              f"diagnostic) {green_mass(student, served, key, config):.4f} vs the base's "
              f"{green_mass(base, served, key, config):.4f}")
        for label, only in (("all pairs", None), ("pairs in served contexts", seen)):
            results[name, label] = r = score(texts, key, ring, owner, config, only)
            print(f"  {label}: {r['pairs']} distinct pairs, green {r['green_fraction']:.4f} "
                  f"(null {config.gamma}); p = {r['p']:.2e} under the harvester's key; "
                  f"attribution among {len(ring)}: "
                  f"{'harvester' if r['attributed'] == owner else r['attributed']} at "
                  f"corrected p = {r['p_corrected']:.2e} (harvester ranked "
                  f"{r['owner_rank'] + 1}; scan {r['scan_s']:.1f} s)")
    teacher_r = score(marked[:args.gen_samples], key, ring, owner, config)
    print(f"reference, the teacher's own watermarked texts (same count): p = "
          f"{teacher_r['p']:.2e}, green {teacher_r['green_fraction']:.4f}")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
