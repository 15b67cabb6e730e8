"""``gateway train`` / ``gateway export``: fit the window classifier on simulator traffic and,
with ``real``, on traffic built from real text (:mod:`gateway.detect.offline.real_training`).

Needs torch (the ``torch`` extra). Writes an artifact directory: ``<name>.onnx`` (what the runtime
scores with), ``<name>.pt`` (the same weights, for the torch-on-CUDA backend) and ``<name>.json``
(version, window parameters, calibrated flag threshold, benign reference values for explanations,
training summary). Training uses the ``train`` split only; the flag threshold is calibrated on
training benign accounts (see :func:`gateway.detect.offline.measures.calibrate`), or, with real
traffic (``real``), on real benign calibration accounts replayed through the engine.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from gateway.detect import explain
from gateway.detect.features import FEATURE_NAMES, FORGEABLE, N_FEATURES
from gateway.detect.model import WindowNet, export_onnx, save_torch
from gateway.detect.offline import adaptive, dataset, real_traffic, real_training, simulate
from gateway.detect.offline import measures as evaluation
from gateway.detect.offline.dataset import Windows
from gateway.detect.window import N_SEQ, SEQ_NAMES, STAT_NAMES


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 7
    accounts_per_profile: int = 60
    requests: tuple[int, int] = (60, 240)
    epochs: int = 15
    batch_size: int = 256
    learning_rate: float = 3e-3
    noise: float = 0.05
    group_dropout: float = 0.15
    """Per window and signal group, the chance of replacing the group with its training mean:
    no single signal (e.g. "templated") can carry the decision alone, which is what lets the
    model cope with generators it has not seen."""
    forged_cues: float = 0.0
    """Per window (either class), the chance that the :data:`~gateway.detect.features.FORGEABLE`
    cues and the prompt sizes are raised as a client decorating its prompts would raise them
    (:func:`forge_cues`): a cue anyone can raise for free should not be able to lower a score.
    Off in the shipped recipe: at 0.4 (window-v10) it took PRADA under a markup header from 8%
    to 67% flagged but held-out benign flags from 0.69% to 1.11% (bench/adaptive_suite.md,
    phase 14)."""
    by_client: bool = False
    """Teach every window per client, as the runtime scores it (:func:`gateway.detect.offline.
    dataset.build_windows`). Off in the shipped recipe: window-v13, trained with it, read PRADA
    under dilution 100% (window-v12: 83-100%) and held-out benign flags fell 0.55% -> 0.41% at
    the suite's threshold, but four distillation cells fell under 90% and accounts that warm up
    before a short harvest passed far more often (bench/adaptive_suite.md, phase 18)."""
    name: str = "window-v1"
    real: str | None = None
    """Also train on real-text traffic at this scale (:data:`gateway.detect.offline.real_training.
    SCALES`), and calibrate the threshold on real benign calibration traffic; None: simulator
    only, threshold from training benign accounts."""
    calibration_seed: int = 11


def fit(windows: Windows, config: TrainConfig) -> WindowNet:
    """Train a WindowNet on ``windows`` (class-balanced BCE, input noise for robustness)."""
    torch.manual_seed(config.seed)
    model = WindowNet()
    model.set_normalisation(windows.seq, windows.mask, windows.stats)
    seq = torch.from_numpy(windows.seq)
    mask = torch.from_numpy(windows.mask)
    stats = torch.from_numpy(windows.stats)
    labels = torch.from_numpy(windows.labels)
    pos = float(labels.mean())
    weights = torch.where(labels > 0, 0.5 / max(pos, 1e-3), 0.5 / max(1 - pos, 1e-3))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=1e-3)
    loss_fn = nn.BCELoss(reduction="none")
    n = len(labels)
    groups = [explain._columns(cols) for cols in explain.GROUPS.values()]
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            s, st = seq[idx], stats[idx]
            if config.forged_cues:
                s, st = forge_cues(s, mask[idx], st, config.forged_cues, generator)
            if config.noise:
                s = s + config.noise * torch.randn_like(s) * model.seq_std * mask[idx, :, None]
                st = st + config.noise * torch.randn_like(st) * model.stats_std
            if config.group_dropout:
                s, st = _drop_groups(model, s, st, groups, config.group_dropout)
            out = model(s, mask[idx], st).clamp(1e-6, 1 - 1e-6)
            loss = (loss_fn(out, labels[idx]) * weights[idx]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    return model


_FORGED: Final = [FEATURE_NAMES.index(name) for name in FORGEABLE]
_CHARS, _WORDS, _RATIO = (FEATURE_NAMES.index(name) for name in (
    "prompt_chars_log", "prompt_words_log", "output_input_ratio"))
_STATS: Final = STAT_NAMES.index(f"mean_{FEATURE_NAMES[0]}")
FORGED_JITTER: Final = 0.2
"""Largest per-request addition on top of a window's own: a header that varies per request."""
PADDING: Final = 2.0
"""Largest factor by which a decorated prompt grows (a header on a short prompt)."""


def forge_cues(seq: torch.Tensor, mask: torch.Tensor, stats: torch.Tensor, p: float,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows as a decorating client would send them. In a share ``p`` of the windows:

    - each forgeable cue is, with even chance, raised on every real request by the window's
      own amount (its square root of a uniform draw: decoration tends to saturate a cue) plus a
      per-request jitter, capped at 1;
    - with even chance, every prompt grows by the window's own factor (up to :data:`PADDING`):
      its size features go up and its output/input ratio down by that factor (an approximation:
      the word count is read from at most 1,500 characters, and the code density, a share of
      the words, is left as it was).

    The ``mean_*``/``std_*`` statistics of a forged window are recomputed from its requests as
    :func:`gateway.detect.window.build_batch` computes them. Never lowers a cue or a size;
    padding rows stay zero; other windows are untouched. Returns new tensors."""
    b, size, _ = seq.shape
    k = len(_FORGED)
    forged = torch.rand(b, generator=generator) < p
    cue = forged[:, None] & (torch.rand(b, k, generator=generator) < 0.5)
    pad = forged & (torch.rand(b, generator=generator) < 0.5)
    amount = torch.rand(b, 1, k, generator=generator).sqrt() \
        + FORGED_JITTER * torch.rand(b, size, k, generator=generator)
    growth = torch.rand(b, 1, generator=generator) * math.log(PADDING) * pad[:, None]
    m = mask[:, :, None]
    seq, stats = seq.clone(), stats.clone()
    old = seq[:, :, _FORGED]
    seq[:, :, _FORGED] = torch.where(cue[:, None, :] & (m > 0),
                                     torch.maximum(old, (old + amount).clamp(max=1.0)), old)
    real = mask > 0
    seq[:, :, _CHARS] += torch.where(real, growth / 8, 0.0)
    seq[:, :, _WORDS] += torch.where(real, growth / 6, 0.0)
    seq[:, :, _RATIO] = torch.where(real, (seq[:, :, _RATIO] - growth / 4).clamp(min=-1.0),
                                    seq[:, :, _RATIO])
    n = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    vec = seq[:, :, :N_FEATURES].double()
    # the mean as stored (float32): build_batch takes the std around the stored mean
    mean = ((vec * m).sum(dim=1) / n).float().double()
    std = ((((vec - mean[:, None, :]) ** 2) * m).sum(dim=1) / n).sqrt()
    stats[forged, _STATS:_STATS + N_FEATURES] = mean[forged].float()
    stats[forged, _STATS + N_FEATURES:_STATS + 2 * N_FEATURES] = std[forged].float()
    return seq, stats


def _drop_groups(model: WindowNet, seq: torch.Tensor, stats: torch.Tensor,
                 groups: list[tuple[list[int], list[int]]], p: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    seq, stats = seq.clone(), stats.clone()
    for seq_cols, stat_cols in groups:
        hit = torch.rand(len(seq)) < p
        if not bool(hit.any()):
            continue
        for c in seq_cols:
            seq[hit, :, c] = model.seq_mean[c]
        for c in stat_cols:
            stats[hit, c] = model.stats_mean[c]
    return seq, stats


def predict(model: WindowNet, windows: Windows, batch: int = 4096) -> npt.NDArray[np.float32]:
    out = []
    with torch.inference_mode():
        for start in range(0, len(windows), batch):
            sl = slice(start, start + batch)
            out.append(model(torch.from_numpy(windows.seq[sl]), torch.from_numpy(
                windows.mask[sl]), torch.from_numpy(windows.stats[sl])).numpy())
    return np.concatenate(out).astype(np.float32)


def fit_gbt(windows: Windows, seed: int = 7) -> Any:
    """The non-neural baseline: gradient-boosted trees on the window statistics only."""
    from sklearn.ensemble import (  # type: ignore[import-untyped]
        HistGradientBoostingClassifier,
    )

    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed,
                                           class_weight="balanced")
    model.fit(windows.stats, windows.labels)
    return model


def _references(windows: Windows) -> tuple[list[float], list[float]]:
    benign = windows.labels == 0
    rows = windows.seq[benign][windows.mask[benign] > 0]
    seq_ref = np.median(rows, axis=0) if len(rows) else np.zeros(N_SEQ)
    stats_ref = np.median(windows.stats[benign], axis=0)
    return [round(float(x), 6) for x in seq_ref], [round(float(x), 6) for x in stats_ref]


def calibrate(meta_path: Path, size: str = "full", seed: int = 11) -> float:
    """Rewrite the artifact's threshold as the real benign calibration quantile (see
    :func:`gateway.detect.offline.real_training.calibration_threshold`: evaluation harnesses
    declared, as an operator declares them); returns it. The weights, and so the version, are
    unchanged: the threshold is the artifact's operating point, not part of the model."""
    meta = json.loads(meta_path.read_text())
    threshold, accounts = real_training.calibration_threshold(
        meta_path, adaptive.SIZES[size], seed)
    meta["threshold"] = min(threshold, 1.0)
    meta["summary"]["calibration"] = {
        "split": "calibration", "accounts": accounts, "target": adaptive.BENIGN_TARGET,
        "seed": seed, "size": size, "declared": sorted(adaptive.DECLARED_PROFILES),
        "allowance": adaptive.SUITE_ALLOWANCE}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return float(meta["threshold"])


def train(out_dir: Path, config: TrainConfig = TrainConfig(), log: Any = print) -> Path:
    """Simulate, fit, calibrate, write the artifact; returns the path of its JSON file."""
    started = time.monotonic()
    random.seed(config.seed)
    sessions = simulate.generate(config.seed, "train", config.accounts_per_profile,
                                 config.requests)
    windows = dataset.build_windows(sessions, by_client=config.by_client)
    if config.real is not None:
        real = real_training.training_sessions(real_training.SCALES[config.real], config.seed)
        windows = dataset.concat([(windows, len(sessions)), (dataset.build_windows(
            real, sparse=True, record=real_traffic.to_record, by_client=config.by_client),
            len(real))])
        sessions = [*sessions, *real]
    log(f"train: {len(sessions)} accounts, {len(windows)} windows "
        f"({time.monotonic() - started:.0f}s)")
    model = fit(windows, config)
    scores = predict(model, windows)
    benign = np.array([s.label == 0 for s in sessions])
    peaks = evaluation.replay(windows, scores, len(sessions)).peak
    threshold = evaluation.calibrate(peaks[benign])
    labels = np.array([s.label for s in sessions])
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{config.name}.onnx"
    torch_path = out_dir / f"{config.name}.pt"
    export_onnx(model, onnx_path, dataset.WINDOW)
    save_torch(model, torch_path)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:12]
    seq_ref, stats_ref = _references(windows)
    meta = {
        "version": f"{config.name}+{digest}",
        "onnx": onnx_path.name,
        "torch": torch_path.name,
        "window": dataset.WINDOW,
        "min_requests": dataset.MIN_REQUESTS,
        "score_every": dataset.SCORE_EVERY,
        "threshold": round(threshold, 4),
        "seq_names": list(SEQ_NAMES),
        "stat_names": list(STAT_NAMES),
        "seq_reference": seq_ref,
        "stats_reference": stats_ref,
        "summary": {
            "architecture": "DeepSets: per-request MLP, masked mean+max pooling, stats, MLP",
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_accounts": len(sessions),
            "train_windows": len(windows),
            "train_auc": round(evaluation.roc_auc(peaks, labels), 5),
            "config": {k: v for k, v in config.__dict__.items()},
            "seconds": round(time.monotonic() - started, 1),
        },
    }
    meta_path = out_dir / f"{config.name}.json"
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    if config.real is not None:
        threshold = calibrate(meta_path, config.real, config.calibration_seed)
    log(f"train: wrote {meta_path} (threshold {threshold:.3f}, "
        f"{time.monotonic() - started:.0f}s)")
    return meta_path
