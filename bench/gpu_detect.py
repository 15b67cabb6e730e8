"""Classifier scoring on the accelerator: throughput, micro-batcher latency, CPU/GPU agreement.

One prepared script for the device machine; installs nothing, runs in a few minutes, and its
CPU path runs anywhere (``--quick`` for a smoke run). Results go to ``$OUT/gpu_detect.json``
(or ``--output``) and are printed.

1. Throughput (windows/s) of the shipped artifact at batch sizes 1..8192 for every backend
   available here: ONNX Runtime CPU, ONNX Runtime CUDA (only with onnxruntime-gpu), torch CUDA
   (torch CPU as a reference). Inputs are real simulator windows, tiled to the batch size and
   already on the host (device transfer included in every call). Each cell: warm-up, then
   repeated calls for ``--seconds``; windows/s = windows / wall time.
2. Micro-batcher latency at ``--rate`` requests/s (10k by default): the runtime's
   DetectionEngine with the best backend, an in-process store, features pre-extracted (this
   measures the batcher, append, window build and scoring — not prompt hashing); 500 accounts,
   each with a warm window, so every account is due every 4th request. Latency = time from a
   request entering the queue to its account's score coming out; p50/p99 over scored windows.
3. Agreement: max |score difference| between ONNX Runtime CPU and each GPU backend on the same
   4096 windows (target: < 1e-4).

    python bench/gpu_detect.py [--quick] [--seconds 1.0] [--rate 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from gateway.detect import features
from gateway.detect.campaign import Campaign
from gateway.detect.offline import dataset, simulate
from gateway.detect.runtime import DetectionEngine, DetectionEngineConfig, Scored
from gateway.detect.scoring import (
    DEFAULT_ARTIFACT,
    Artifact,
    OnnxScorer,
    Scorer,
    TorchScorer,
    project,
)
from gateway.detect.window_store import MemoryWindowStore
from gateway.metrics import Metrics

BATCHES = (1, 8, 64, 512, 1024, 4096, 8192)


def backends(artifact: Artifact) -> dict[str, Scorer]:
    found: dict[str, Scorer] = {"onnx-cpu": OnnxScorer(artifact.onnx_path,
                                                        ["CPUExecutionProvider"],
                                                        threads=os.cpu_count() or 1)}
    import onnxruntime as ort
    import torch

    if "CUDAExecutionProvider" in ort.get_available_providers():
        scorer = OnnxScorer(artifact.onnx_path, ["CUDAExecutionProvider"])
        if scorer.name == "onnx-cuda":
            found["onnx-cuda"] = scorer
    if artifact.torch_path is not None:
        if torch.cuda.is_available():
            found["torch-cuda"] = TorchScorer(artifact.torch_path, "cuda")
        found["torch-cpu"] = TorchScorer(artifact.torch_path, "cpu")
    return {name: project(scorer, artifact) for name, scorer in found.items()}


def tiled(windows: dataset.Windows, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = np.arange(n) % len(windows)
    return (np.ascontiguousarray(windows.seq[idx]), np.ascontiguousarray(windows.mask[idx]),
            np.ascontiguousarray(windows.stats[idx]))


def throughput(scorer: Scorer, windows: dataset.Windows, batches: Sequence[int],
               seconds: float) -> dict[int, float]:
    out = {}
    for b in batches:
        seq, mask, stats = tiled(windows, b)
        for _ in range(3):
            scorer.score(seq, mask, stats)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            scorer.score(seq, mask, stats)
            calls += 1
        out[b] = calls * b / (time.perf_counter() - start)
        print(f"  {scorer.name:10s} batch {b:5d}: {out[b]:14,.0f} windows/s", flush=True)
    return out


class Latency:
    def __init__(self) -> None:
        self.enqueued: dict[str, float] = {}
        self.samples: list[float] = []

    async def on_scored(self, results: Sequence[Scored]) -> None:
        now = time.perf_counter()
        self.samples.extend(now - self.enqueued[r.account] for r in results
                            if r.account in self.enqueued)

    async def on_campaigns(self, found: Sequence[Campaign]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


async def batcher_latency(scorer: Scorer, artifact: Artifact, rate: float, seconds: float,
                          items: list[features.RequestFeatures]) -> dict[str, float]:
    policy = Latency()
    config = DetectionEngineConfig(window=artifact.window, max_batch=256, max_wait_s=0.002,
                          min_score_interval_s=0.0, campaign_interval_s=3600)
    engine = DetectionEngine(config, scorer, artifact, MemoryWindowStore(artifact.window), policy,
                             metrics=Metrics(CollectorRegistry()))
    accounts = [f"acct{i}" for i in range(500)]
    for i, account in enumerate(accounts):  # warm windows: every account is scorable at once
        for j in range(config.min_requests):
            engine.observe_features(account, items[(i + j) % len(items)])
    await engine.start()
    await engine.drain(60)
    policy.samples.clear()
    tick = 0.001
    per_tick = rate * tick
    sent, start, carry = 0, time.perf_counter(), 0.0
    try:
        while time.perf_counter() - start < seconds:
            carry += per_tick
            while carry >= 1:
                account = accounts[sent % len(accounts)]
                policy.enqueued[account] = time.perf_counter()
                engine.observe_features(account, items[sent % len(items)])
                sent += 1
                carry -= 1
            await asyncio.sleep(tick)
        await engine.drain(30)
    finally:
        await engine.stop()
    elapsed = time.perf_counter() - start
    lat = np.array(policy.samples) * 1000
    return {"offered_rps": rate, "achieved_rps": sent / elapsed, "scored": float(len(lat)),
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a CPU smoke run)")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    parser.add_argument("--output", type=Path,
                        default=Path(os.environ.get("OUT", "bench/results")) / "gpu_detect.json")
    args = parser.parse_args()
    artifact = Artifact.load(args.artifact)
    sessions = simulate.generate(99, "heldout", 2 if args.quick else 6, (40, 120))
    windows = dataset.build_windows(sessions)
    items = [it for s in sessions[:20] for it in dataset.session_features(s)]
    found = backends(artifact)
    print(f"backends: {', '.join(found)}; {len(windows)} distinct windows", flush=True)
    batches = BATCHES[:4] if args.quick else BATCHES
    seconds = 0.2 if args.quick else args.seconds
    result: dict[str, Any] = {"host": platform.node(), "artifact": artifact.version,
                              "throughput": {}, "agreement": {}, "batcher": {}}
    for name, scorer in found.items():
        result["throughput"][name] = throughput(scorer, windows, batches, seconds)
    seq, mask, stats = tiled(windows, 512 if args.quick else 4096)
    reference = found["onnx-cpu"].score(seq, mask, stats)
    for name, scorer in found.items():
        if name != "onnx-cpu":
            diff = float(np.abs(scorer.score(seq, mask, stats) - reference).max())
            result["agreement"][name] = diff
            print(f"agreement onnx-cpu vs {name}: max |diff| = {diff:.2e}", flush=True)
    best = next(n for n in ("onnx-cuda", "torch-cuda", "onnx-cpu") if n in found)
    rate = min(args.rate, 2000) if args.quick else args.rate
    stats_ = asyncio.run(batcher_latency(found[best], artifact, rate, 2 if args.quick else 5,
                                         items))
    result["batcher"] = {"backend": best, **stats_}
    print(f"micro-batcher on {best}: {json.dumps(stats_)}", flush=True)
    best_tp = {n: max(v.values()) for n, v in result["throughput"].items()}
    result["summary"] = {"max_windows_per_s": best_tp,
                         "median_cell": {n: statistics.median(v.values())
                                         for n, v in result["throughput"].items()}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
