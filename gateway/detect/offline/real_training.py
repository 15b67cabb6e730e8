"""Training and calibration data from real text: the ``train`` split for fitting, the
``calibration`` split for the flag threshold. The ``heldout`` split is never touched here.

Why: a model fitted on the simulator alone learnt the simulator's wording and transport habits
(bench/adaptive_before_window-v1.txt). Here every benign automation profile is a negative, and
every attack is written under every single evasion an informed attacker has (streaming, chat
parameters, dilution, head camouflage, paraphrase, human timing, the completions route) and a
few of their pairs, so no one of them moves a window out of what the model has seen. Sybil
splitting is left out: its accounts never reach a window (that is the campaign sweep's job).

The threshold is a quantile of real benign risk, measured the way production measures it (the
online replay through the engine), not a margin above the training maximum.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

from gateway.detect.offline import adaptive, corpus, evasions
from gateway.detect.offline.engine_replay import replay
from gateway.detect.offline.real_attacks import ATTACK_FNS
from gateway.detect.offline.simulate import Session
from gateway.detect.scoring import Artifact, load_scorer

TRAIN_COMBOS: Final = ("none", *(e for e in evasions.SINGLE
                                  if e != "sybil_split" and e not in evasions.ACCOUNT_ONLY),
                       "stream+paraphrase", "head_camouflage+paraphrase",
                       "dilute50+human_timing", "completions+chat_params")
NOT_TAUGHT: Final = frozenset({("distill_cot", "greedy"), ("sybil", "greedy")})
"""(attack, combination) cells left out of the positives: chain-of-thought on benchmark questions
decoded at temperature 0 is, request for request, an evaluation harness's first pass (the same
questions, one format, long answers; bench/adaptive_suite.md, phase 5). Taught as an attack, it
taught the model to flag harnesses (window-v3: held-out evaluation harnesses flagged 22.5% ->
50%) for the sake of a harvest that is bounded by the benchmarks' size. Greedy distillation of
open-ended prompts — what a harness never sends — is taught."""


SCALES: Final = {
    "small": adaptive.SIZES["small"],
    "full": adaptive.Size("train", corpus.Limits(), users=120, automation=24,
                          benign_requests=(40, 240), operations=2, requests=160),
}
"""Training populations: benign people and automation per profile, and attack operations
(``operations`` of ``requests`` requests) per (attack, combination)."""


def training_sessions(scale: adaptive.Size, seed: int) -> list[Session]:
    """Labelled accounts from the ``train`` split: benign people and automation (label 0),
    attacks under :data:`TRAIN_COMBOS` (label 1)."""
    pool = corpus.pool("train", scale.limits)
    out = adaptive.benign_population(pool, scale, seed)
    for attack in ATTACK_FNS:
        for combo in (c for c in TRAIN_COMBOS if (attack, c) not in NOT_TAUGHT):
            for index in range(scale.operations):
                out += adaptive.operation(pool, attack, combo, index, scale.requests, seed)
    return out


def calibration_threshold(artifact_path: Path, size: adaptive.Size, seed: int,
                          target: float = adaptive.BENIGN_TARGET) -> tuple[float, int]:
    """The lowest risk that flags at most ``target`` of benign ``calibration`` accounts when
    replayed through the engine with this artifact; and how many accounts that was."""
    artifact = Artifact.load(artifact_path)
    scorer = load_scorer(artifact, "cpu")
    benign = adaptive.benign_population(corpus.pool("calibration", size.limits), size, seed)
    result = asyncio.run(replay(benign, scorer, artifact, adaptive.group_of))
    return adaptive.calibrate(adaptive.benign_peaks(benign, result), target), len(benign)

