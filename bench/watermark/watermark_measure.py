"""Watermark measurements on the tiny model's own samples: detection power, null calibration
(≥ 10,000 trials), quality cost, robustness, attribution among 10,000 accounts, and the
processor's CPU cost against baselines measured in the same run (more in ``watermark_cpu.py``
beside it). Radioactivity: ``radioactivity.py``; KGW vs SynthID-style: ``watermark_schemes.py``;
multi-bit payload vs key scan: ``watermark_multibit.py`` (all in bench/watermark/).

    python -m bench.watermark.watermark_measure [--model DIR] [--samples 32] [--length 300] \
        [--quick]

Prints one line per figure; the CPU cost is given as ratios to a same-run baseline (this
machine is shared; absolute times do not hold).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gateway.modelserver.config import DEFAULT_MODEL_DIR
from gateway.modelserver.decoder import BatchDecoder, Sequence
from gateway.modelserver.train_tiny import stdlib_docstrings
from gateway.watermark.attribution import KeyRing, attribute
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.detector import binomial_upper_tail, detect, green_counts, scored_pairs
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, context_window, keys_tensor

SECRET = b"bench-watermark-secret-0123456789abcdef"
ALPHA = 1e-6


def load(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()


def generate(model: Any, prompts: list[list[int]], length: int, config: WatermarkConfig | None,
             key: tuple[int, int] | None, seed: int) -> tuple[list[list[int]], list[float]]:
    """Batched sampling (temperature 1) through the server's own engine step; the KL of the
    watermarked step distribution from the model's, per token."""
    processor = WatermarkProcessor(config, 257) if config else None
    engine = BatchDecoder(model, 256, 256, processor, torch.device("cpu"))
    gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(len(prompts))]
    seqs = [Sequence(prompt=p, max_tokens=length, temperature=1.0, top_p=1.0, top_logprobs=0,
                     bias={256: -100.0}, key=key, generator=g, emit=lambda _: None)
            for p, g in zip(prompts, gens, strict=True)]
    kls: list[float] = []
    with torch.inference_mode():
        for _ in range(length):
            if processor is not None and key is not None:
                kls.extend(_step_kl(model, seqs, processor, key))
            out = engine.step(seqs)
            for s, t in zip(seqs, out.tokens, strict=True):
                s.generated.append(t)
    return [s.generated for s in seqs], kls


def _step_kl(model: Any, seqs: list[Sequence], processor: WatermarkProcessor,
             key: tuple[int, int]) -> list[float]:
    ids = torch.tensor([(s.prompt + s.generated)[-256:] for s in seqs])
    logits = model(input_ids=ids).logits[:, -1, :].float()
    logits[:, 256] -= 100
    wm = processor(logits, context_window([s.prompt + s.generated for s in seqs], 4),
                   keys_tensor([key] * len(seqs)))
    p, q = torch.log_softmax(logits, -1), torch.log_softmax(wm, -1)
    return (q.exp() * (q - p)).sum(-1).tolist()


def perplexity(model: Any, prompts: list[list[int]], texts: list[list[int]]) -> float:
    total, count = 0.0, 0
    with torch.inference_mode():
        for prompt, text in zip(prompts, texts, strict=True):
            ids = torch.tensor([(prompt + text)[-256:]])
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            target = ids[0, 1:]
            tail = len(text) - 1
            total -= float(lp[-tail:].gather(-1, target[-tail:, None]).sum())
            count += tail
    return math.exp(total / count)


def tokens_needed(text: list[int], key: tuple[int, int], config: WatermarkConfig) -> int | None:
    for n in range(20, len(text) + 1, 10):
        if detect(text[:n], key, config).p_value < ALPHA:
            return n
    return None


def attribution_tokens(text: list[int], ring: KeyRing, account: str,
                       config: WatermarkConfig) -> int | None:
    for n in range(40, len(text) + 1, 20):
        found = attribute(text[:n], ring, config, ALPHA)
        if found.account_id is not None:
            return n if found.account_id == account else -1
    return None


def edit(text: list[int], rate: float, kind: str, rng: np.random.Generator) -> list[int]:
    out = []
    for t in text:
        if rng.random() < rate:
            if kind == "delete":
                continue
            t = int(rng.integers(32, 127))
        out.append(t)
    return out


def pct(values: list[Any]) -> str:
    got = [v for v in values if v is not None and v >= 0]
    if not got:
        return f"none of {len(values)}"
    return (f"median {int(np.median(got))}, p90 {int(np.percentile(got, 90))} "
            f"({len(got)}/{len(values)} reached)")


def null_trials(texts: list[list[int]], config: WatermarkConfig, trials: int) -> np.ndarray:
    """p-values of unwatermarked texts against fresh random keys (independent nulls)."""
    rng = np.random.default_rng(0)
    per = math.ceil(trials / len(texts))
    out = []
    for text in texts:
        ctx, tokens = scored_pairs(text, config.width)
        keys = rng.integers(0, 2**32, size=(per, 2), dtype=np.int64)
        counts = green_counts(ctx, tokens, keys, config.gamma)
        out.append(binomial_upper_tail(len(tokens), config.gamma)[counts])
    return np.concatenate(out)[:trials]


def cpu_cost(batch: int, vocab: int, repeats: int) -> str:
    processor = WatermarkProcessor(WatermarkConfig(), vocab)
    logits = torch.randn(batch, vocab)
    ctx = torch.randint(0, vocab, (batch, 4))
    keys = torch.randint(0, 2**32, (batch, 2))

    def timed(fn: Any) -> float:
        fn()
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best

    floor = timed(lambda: logits + 1.0)
    softmax = timed(lambda: torch.softmax(logits, -1))
    ours = timed(lambda: processor(logits, ctx, keys))
    int64 = timed(lambda: logits + processor.reference_green_mask(ctx, keys).to(
        logits.dtype) * processor.config.delta)

    def randperm() -> None:  # the reference KGW code: one seeded permutation per row
        g = torch.Generator()
        for row in range(batch):
            g.manual_seed(int(keys[row, 0]) ^ int(ctx[row, -1]))
            torch.randperm(vocab, generator=g)[: vocab // 4]

    perm = timed(randperm)
    return (f"B={batch} V={vocab}: processor {ours * 1e3:.2f} ms = {ours / floor:.1f}x one "
            f"read+write of the logits, {ours / softmax:.2f}x a softmax, "
            f"int64 reference {int64 / ours:.1f}x and per-row randperm {perm / ours:.1f}x "
            f"slower than ours")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--deltas", default="2.0")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    model = load(Path(args.model))
    docs = [d.encode()[:2000] for d in stdlib_docstrings()]
    rng = np.random.default_rng(0)
    picks = rng.choice(len(docs), size=args.samples, replace=False)
    prompts = [list(docs[i][:24]) for i in picks]
    accounts = [f"acct-{i:05d}" for i in range(10_000)]
    owner = accounts[4321]
    key = derive_key(SECRET, owner)
    plain, _ = generate(model, prompts, args.length, None, None, seed=1)
    print(f"samples: {args.samples} x {args.length} tokens (bytes), tiny model at T=1")
    print(f"perplexity, unwatermarked samples: {perplexity(model, prompts, plain):.3f}")
    for delta in [float(d) for d in args.deltas.split(",")]:
        config = WatermarkConfig(gamma=0.25, delta=delta, width=4)
        marked, kls = generate(model, prompts, args.length, config, key, seed=1)
        print(f"--- gamma 0.25, delta {delta}, width 4")
        print(f"perplexity, watermarked samples: {perplexity(model, prompts, marked):.3f}; "
              f"KL(watermarked || model) per token: mean {np.mean(kls):.4f} nats")
        print("tokens for p < 1e-6: " + pct([tokens_needed(t, key, config) for t in marked]))
        full = [detect(t, key, config) for t in marked]
        print(f"full-length p-values: median {np.median([d.p_value for d in full]):.2e}; "
              f"distinct pairs scored median {int(np.median([d.tokens_scored for d in full]))}")
        for kind in ("substitute", "delete"):
            for rate in (0.10, 0.25):
                edited = [edit(t, rate, kind, rng) for t in marked]
                ps = [detect(t, key, config).p_value for t in edited]
                hit = np.mean([p < ALPHA for p in ps])
                print(f"{kind} {rate:.0%}: median p {np.median(ps):.2e}, "
                      f"detected at 1e-6 in {hit:.0%}")
        ring = KeyRing(accounts, [SECRET])
        start = time.perf_counter()
        got = [attribution_tokens(t, ring, owner, config) for t in marked[:12]]
        print("attribution among 10,000 accounts (corrected p < 1e-6), tokens: " + pct(got)
              + f"; wrong account: {sum(1 for g in got if g == -1)}; "
              f"{(time.perf_counter() - start) / max(1, len(got)):.2f} s per text scan")
    config = WatermarkConfig()
    null = null_trials(plain, config, 10_000)
    human = null_trials([list(d) for d in docs[:40]], config, 10_000)
    for name, p in (("model samples", null), ("stdlib docstrings", human)):
        print(f"FPR over {len(p)} unwatermarked trials ({name}): "
              + ", ".join(f"P(p<{a:g}) = {np.mean(p < a):.4f}" for a in (0.1, 0.01, 0.001)))
    if not args.skip_cpu:
        for vocab in (50_000, 128_000):
            print("CPU cost: " + cpu_cost(64, vocab, 5))


if __name__ == "__main__":
    main()
