"""``gateway evaluate``: the shipped model against the GBT and PRADA baselines on held-out traffic.

Held-out means a different seed *and* the other half of every generator (banks, phrasings,
prompt structures) *and* two profiles never trained on (``support``, ``mimicry``). Baselines are
fitted/calibrated on the train split exactly as the model was: GBT on window statistics, PRADA's
statistic (1 - Shapiro-Francia W' of the minimum-distance distribution) thresholded by the same
calibration rule. Needs scikit-learn for the GBT baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.detect.offline import dataset, simulate
from gateway.detect.offline import measures as evaluation
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact, Scorer, load_scorer


@dataclass(frozen=True)
class EvalConfig:
    seed: int = 1007
    accounts_per_profile: int = 170
    train_accounts_per_profile: int = 60
    train_seed: int = 7
    requests: tuple[int, int] = (60, 240)


def _batched(scorer: Scorer, windows: dataset.Windows, batch: int = 4096) -> np.ndarray:
    parts = [scorer.score(windows.seq[i:i + batch], windows.mask[i:i + batch],
                          windows.stats[i:i + batch]) for i in range(0, len(windows), batch)]
    return np.concatenate(parts)


def run(artifact_path: Path = DEFAULT_ARTIFACT, config: EvalConfig = EvalConfig(),
        log: Callable[[str], None] = print) -> list[evaluation.Report]:
    started = time.monotonic()
    artifact = Artifact.load(artifact_path)
    train_sessions = simulate.generate(config.train_seed, "train",
                                       config.train_accounts_per_profile, config.requests)
    train = dataset.build_windows(train_sessions)
    test_sessions = simulate.generate(config.seed, "heldout", config.accounts_per_profile,
                                      config.requests)
    test = dataset.build_windows(test_sessions)
    log(f"evaluate: {len(test_sessions)} held-out accounts "
        f"({sum(1 - s.label for s in test_sessions)} benign), {len(test)} windows "
        f"({time.monotonic() - started:.0f}s)")
    benign_train = np.array([s.label == 0 for s in train_sessions])

    def threshold_of(scores: np.ndarray) -> float:
        peaks = evaluation.replay(train, scores, len(train_sessions)).peak
        return evaluation.calibrate(peaks[benign_train])

    scorer = load_scorer(artifact, "cpu", backend="onnx", threads=2)
    reports = [evaluation.report(f"model {artifact.version.split('+')[0]}", test_sessions, test,
                                 _batched(scorer, test), artifact.threshold)]
    from gateway.detect.offline.train import fit_gbt

    gbt = fit_gbt(train)
    gbt_train = gbt.predict_proba(train.stats)[:, 1]
    reports.append(evaluation.report("GBT (stats)", test_sessions, test,
                                     gbt.predict_proba(test.stats)[:, 1],
                                     threshold_of(gbt_train)))
    reports.append(evaluation.report("PRADA", test_sessions, test, test.prada,
                                     threshold_of(train.prada)))
    log(f"evaluate: done ({time.monotonic() - started:.0f}s)")
    return reports
