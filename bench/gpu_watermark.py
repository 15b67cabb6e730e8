"""Watermark overhead per decoding step on the accelerator: batch 64, V = 50k and 128k.

Variants: eager torch (the processor, 32-bit), the int64 reference of the same hash (what the
processor was before), ``torch.compile`` of the processor, and a fused Triton
kernel that reads and writes the logits once (when Triton is importable). Each is checked
bit-identical to the CPU reference before it is timed; the floors are one read+write of the
logits (``logits + 1``). Results print and go to ``$OUT/gpu_watermark.json``. Installs nothing;
runs in about a minute. ``--device cpu`` (small sizes) is what CI runs.

    python bench/gpu_watermark.py                      # on the GPU machine
    python bench/gpu_watermark.py --device cpu --vocabs 1000 --batch 4 --iters 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gateway.watermark.config import WatermarkConfig
from gateway.watermark.hashing import (
    MASK,
    MULT,
    TOKEN_SALT,
    context_hash,
    green_threshold,
    step_seed,
)
from gateway.watermark.processor import WatermarkProcessor

try:  # pragma: no cover - only on machines with Triton
    import triton
    import triton.language as tl

    # A @triton.jit function reads globals only as constexpr, and its parameters' annotations
    # are evaluated by Triton (``Any`` is a global too): the kernels are left unannotated.
    _MULT = tl.constexpr(MULT)
    _TOKEN_SALT = tl.constexpr(TOKEN_SALT)

    @triton.jit
    def _mix(x):  # type: ignore[no-untyped-def]
        x = ((x >> 16) ^ x) * _MULT
        x = ((x >> 16) ^ x) * _MULT
        return (x >> 16) ^ x

    @triton.jit
    def _watermark_kernel(logits_ptr, seeds_ptr, vocab, stride,  # type: ignore[no-untyped-def]
                          threshold, delta, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = cols < vocab
        seed = tl.load(seeds_ptr + row).to(tl.uint32)
        token = _mix((cols + _TOKEN_SALT).to(tl.uint32))
        green = _mix(seed ^ token) < threshold
        ptr = logits_ptr + row * stride + cols
        values = tl.load(ptr, mask=inside)
        tl.store(ptr, tl.where(green, values + delta, values), mask=inside)

    HAVE_TRITON = True
except Exception:
    HAVE_TRITON = False


def triton_watermark(processor: WatermarkProcessor, logits: torch.Tensor,
                     context: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """In place: one pass over the logits. Seeds (B values) are computed by torch."""
    ctx = context_hash(context, processor.config.width)
    seeds = step_seed(keys[:, 0], keys[:, 1], ctx).to(torch.int64)
    batch, vocab = logits.shape
    block = 1024
    grid = (batch, triton.cdiv(vocab, block))
    _watermark_kernel[grid](logits, seeds, vocab, logits.stride(0), processor.threshold,
                            processor.config.delta, BLOCK=block)
    return logits


def timed(fn: Callable[[], Any], iters: int, device: torch.device) -> float:
    """Median seconds per call (after warm-up), synchronising the device."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2]


def run(device: torch.device, vocab: int, batch: int, iters: int, compile_: bool
        ) -> dict[str, Any]:
    config = WatermarkConfig()
    gen = torch.Generator().manual_seed(0)
    logits_cpu = torch.randn(batch, vocab, generator=gen)
    context_cpu = torch.randint(0, vocab, (batch, config.width), generator=gen)
    keys_cpu = torch.randint(0, 2**32, (batch, 2), generator=gen)
    reference = WatermarkProcessor(config, vocab)(logits_cpu, context_cpu, keys_cpu)
    processor = WatermarkProcessor(config, vocab, device)
    logits = logits_cpu.to(device)
    context, keys = context_cpu.to(device), keys_cpu.to(device)
    result: dict[str, Any] = {"vocab": vocab, "batch": batch, "device": str(device)}
    result["floor_read_write_us"] = timed(lambda: logits + 1.0, iters, device) * 1e6
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "eager": lambda: processor(logits, context, keys),
        "eager_int64_reference": lambda: logits + processor.reference_green_mask(
            context, keys).to(logits.dtype) * config.delta}
    if compile_:
        compiled = torch.compile(processor.__call__)
        variants["compiled"] = lambda: compiled(logits, context, keys)
    if HAVE_TRITON and device.type == "cuda":
        scratch = logits.clone()
        variants["triton"] = lambda: triton_watermark(processor, scratch.copy_(logits),
                                                      context, keys)
    for name, fn in variants.items():
        try:
            identical = bool(torch.equal(fn().cpu(), reference))
            result[f"{name}_identical"] = identical
            result[f"{name}_us"] = timed(fn, iters, device) * 1e6
        except Exception as exc:
            result[f"{name}_error"] = repr(exc)[:300]
    if "triton_us" in result:
        result["triton_copy_floor_us"] = timed(lambda: scratch.copy_(logits), iters,
                                               device) * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vocabs", default="50000,128000")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = [run(device, int(v), args.batch, args.iters, not args.no_compile)
               for v in args.vocabs.split(",")]
    for r in results:
        print(json.dumps(r))
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_watermark.json").write_text(json.dumps(results, indent=2))
    _ = MASK, green_threshold  # the kernel's constants come from the shared hashing module


if __name__ == "__main__":
    main()
