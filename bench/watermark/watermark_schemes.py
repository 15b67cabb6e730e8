"""KGW (the product's scheme) vs a SynthID-Text-style tournament on the tiny model's own samples:
tokens to p < 1e-6, quality cost (perplexity under the unwatermarked model, KL per token) and
robustness to 10% / 25% token substitution — the numbers behind the choice of scheme.

SynthID-style here: ``--layers`` tournament layers with two leaves per match, binary g-values
``g_l(context, token)`` from the shared hashing module (the top bit of
``mix(seed_l ^ token_hash(token))`` with ``seed_l = mix(step_seed(key, context) ^ salt_l)``).
Sampling uses the closed form of a two-leaf layer, ``p'(x) = p(x) (1 + g_l(x) − E_p[g_l])``,
applied layer after layer (Dathathri et al. 2024, vectorised tournament), then one draw.
Detection scores each distinct (context, token) pair's ``layers`` g-values: under the null they
are independent fair coins, so the sum is Binomial(pairs × layers, 1/2) — an exact p-value.

    python -m bench.watermark.watermark_schemes [--samples 32] [--length 200] [--deltas 1,2,3]
                                      [--layers 4,8,30]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.watermark.watermark_support import (
    Sampler,
    generate,
    load,
    multinomial,
    perplexity,
    prompts,
    substitute,
)
from gateway.modelserver.config import DEFAULT_MODEL_DIR
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.detector import Ints, binomial_upper_tail, detect, scored_pairs
from gateway.watermark.hashing import MASK, mix, step_seed, token_hash
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, keys_tensor

SECRET = b"bench-watermark-schemes-0123456789abcdef"
ALPHA = 1e-6
LAYER_SALT = 0x68E31DA4


def g_values(seeds: Ints | torch.Tensor, hashed: Ints | torch.Tensor, layers: int) -> list[Any]:
    """``layers`` arrays of 0/1 g-values, broadcasting ``seeds`` against ``hashed`` tokens."""
    out = []
    for layer in range(layers):
        seed_l = mix(seeds ^ ((LAYER_SALT * (layer + 1)) & MASK))
        out.append(mix(seed_l ^ hashed) >> 31)
    return out


def synthid_probs(logits: torch.Tensor, seeds: torch.Tensor, hashed: torch.Tensor,
                  layers: int) -> torch.Tensor:
    """The tournament's output distribution, ``(B, V)``."""
    probs = torch.softmax(logits, -1).double()
    for g in g_values(seeds[:, None], hashed[None, :], layers):
        g = g.double()
        probs = (probs * (1 + g - (probs * g).sum(-1, keepdim=True))).clamp_min(0.0)
    return probs.float()


class Scheme:
    name: str
    sampler: Sampler
    kls: list[float]
    detect: Callable[[list[int]], float]


def kgw(config: WatermarkConfig, key: tuple[int, int], vocab: int) -> Scheme:
    scheme = Scheme()
    scheme.name = f"KGW gamma {config.gamma} delta {config.delta} width {config.width}"
    scheme.kls = []
    processor = WatermarkProcessor(config, vocab)
    key_row = keys_tensor([key])

    def sample(logits: torch.Tensor, history: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        marked = processor(logits, history[:, -config.width:], key_row.expand(len(logits), 2))
        scheme.kls.extend(kl(torch.log_softmax(marked, -1), logits))
        return multinomial(marked, history, generator)

    scheme.sampler = sample
    scheme.detect = lambda text: detect(text, key, config).p_value
    return scheme


def synthid(layers: int, width: int, key: tuple[int, int], vocab: int) -> Scheme:
    scheme = Scheme()
    scheme.name = f"SynthID-style tournament, {layers} layers, width {width}"
    scheme.kls = []
    processor = WatermarkProcessor(WatermarkConfig(width=width), vocab)
    hashed = processor.token_hashes
    key_row = keys_tensor([key])

    def sample(logits: torch.Tensor, history: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        seeds = processor.seeds(history[:, -width:], key_row.expand(len(logits), 2))
        probs = synthid_probs(logits, seeds, hashed, layers)
        scheme.kls.extend(kl(probs.log(), logits))
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    def p_value(text: list[int]) -> float:
        ctx, tokens = scored_pairs(text, width)
        if not len(tokens):
            return 1.0
        seeds = step_seed(np.int64(key[0]), np.int64(key[1]), ctx)
        score = int(sum(g.sum() for g in g_values(seeds, token_hash(tokens), layers)))
        return float(binomial_upper_tail(len(tokens) * layers, 0.5)[score])

    scheme.sampler = sample
    scheme.detect = p_value
    return scheme


def kl(log_q: torch.Tensor, logits: torch.Tensor) -> list[float]:
    """KL(watermarked ‖ model) per row, nats."""
    log_p = torch.log_softmax(logits, -1)
    q = log_q.exp()
    terms = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q))
    return [float(v) for v in terms.nan_to_num(0.0).sum(-1)]


def tokens_needed(text: list[int], detect_p: Callable[[list[int]], float]) -> int | None:
    for n in range(10, len(text) + 1, 5):
        if detect_p(text[:n]) < ALPHA:
            return n
    return None


def summary(values: list[int | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return f"none of {len(values)} reached"
    return (f"median {int(np.median(got))}, p90 {int(np.percentile(got, 90))} "
            f"({len(got)}/{len(values)} reached)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--layers", default="30", help="tournament depths to compare")
    parser.add_argument("--deltas", default="2.0", help="KGW strengths to compare")
    parser.add_argument("--width", type=int, default=4)
    args = parser.parse_args()
    model = load(Path(args.model))
    vocab = int(model.config.vocab_size)
    key = derive_key(SECRET, "acct-harvester")
    asked = prompts(args.samples, seed=7)
    plain = generate(model, asked, args.length, multinomial, seed=3)
    base_ppl = perplexity(model, asked, plain)
    print(f"{args.samples} samples x {args.length} tokens, tiny model, T=1; perplexity of "
          f"unwatermarked samples {base_ppl:.3f}")
    schemes = [kgw(WatermarkConfig(delta=float(d), width=args.width), key, vocab)
               for d in args.deltas.split(",")]
    schemes.extend(synthid(int(m), args.width, key, vocab) for m in args.layers.split(","))
    rng = np.random.default_rng(0)
    for scheme in schemes:
        began = time.perf_counter()
        texts = generate(model, asked, args.length, scheme.sampler, seed=3)
        took = time.perf_counter() - began
        ppl = perplexity(model, asked, texts)
        print(f"--- {scheme.name} (generation {took:.0f} s)")
        print(f"perplexity {ppl:.3f} ({ppl / base_ppl:.3f}x unwatermarked); KL per token "
              f"mean {np.mean(scheme.kls):.4f} nats")
        print("tokens for p < 1e-6: " + summary([tokens_needed(t, scheme.detect) for t in texts]))
        null = [scheme.detect(t) for t in plain]
        print(f"unwatermarked samples: median p {np.median(null):.2f}, "
              f"min p {np.min(null):.2e}")
        for rate in (0.10, 0.25):
            ps = [scheme.detect(substitute(t, rate, rng)) for t in texts]
            print(f"substitute {rate:.0%}: median p {np.median(ps):.2e}, detected at 1e-6 in "
                  f"{np.mean([p < ALPHA for p in ps]):.0%}")


if __name__ == "__main__":
    main()
