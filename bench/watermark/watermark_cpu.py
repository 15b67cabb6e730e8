"""CPU cost of the watermark processor per decoding step, against baselines timed in the same
run: one softmax over the same logits, one read+write of them (``logits + 1``), the int64
reference of the same hash (the processor before it went 32-bit), and the reference KGW code's
per-row seeded ``randperm``. Every variant is checked bit-identical to the reference first.

    python -m bench.watermark.watermark_cpu [--batch 64] [--vocabs 50000,128000] [--repeats 7]
                                  [--threads N] [--compile]

``--compile`` adds the processor's optional ``torch.compile`` path (inductor's C++ backend;
tens of seconds to compile the first time). Ratios, not absolute times, are the result: this
machine is shared.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from gateway.watermark.config import WatermarkConfig
from gateway.watermark.processor import WatermarkProcessor


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(batch: int, vocab: int, repeats: int, compile_: bool) -> None:
    config = WatermarkConfig()
    processor = WatermarkProcessor(config, vocab)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, vocab, generator=gen)
    ctx = torch.randint(-1, vocab, (batch, config.width), generator=gen)
    keys = torch.randint(0, 2**32, (batch, 2), generator=gen)

    def reference() -> torch.Tensor:
        green = processor.reference_green_mask(ctx, keys)
        return logits + green.to(logits.dtype) * config.delta

    def randperm() -> None:  # the reference KGW code: one seeded permutation per row
        g = torch.Generator()
        for row in range(batch):
            g.manual_seed(int(keys[row, 0]) ^ int(ctx[row, -1]))
            torch.randperm(vocab, generator=g)[: vocab // 4]

    variants: dict[str, Callable[[], Any]] = {"processor": lambda: processor(logits, ctx, keys)}
    if compile_:
        compiled = WatermarkProcessor(config, vocab, compile=True)
        began = time.perf_counter()
        compiled(logits, ctx, keys)
        print(f"V={vocab}: torch.compile warm-up {time.perf_counter() - began:.0f} s")
        if compiled._compiled is None:
            raise SystemExit("the compiled path fell back to eager")
        variants["compiled"] = lambda: compiled(logits, ctx, keys)
    expected = reference()
    for name, fn in variants.items():
        if not torch.equal(fn(), expected):
            raise SystemExit(f"{name} is not bit-identical to the reference")
    times = {"softmax": best_of(lambda: torch.softmax(logits, -1), repeats),
             "read+write": best_of(lambda: logits + 1.0, repeats),
             "int64 reference": best_of(reference, repeats),
             "per-row randperm": best_of(randperm, max(1, repeats // 3))}
    times.update({name: best_of(fn, repeats) for name, fn in variants.items()})
    soft = times["softmax"]
    print(f"B={batch} V={vocab} ({torch.get_num_threads()} threads): "
          + "; ".join(f"{k} {v * 1e3:.2f} ms = {v / soft:.2f}x softmax" for k, v in times.items())
          + f"; processor is {times['int64 reference'] / times['processor']:.1f}x faster than "
          f"the int64 reference (bit-identical)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--vocabs", default="50000,128000")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for vocab in (int(v) for v in args.vocabs.split(",")):
        run(args.batch, vocab, args.repeats, args.compile)


if __name__ == "__main__":
    main()
