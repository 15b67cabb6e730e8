"""Training, ONNX export and the scorers: a tiny run, and the shipped artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gateway.detect.model import load_torch
from gateway.detect.offline import dataset, simulate
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact, OnnxScorer, load_scorer


def _windows() -> dataset.Windows:
    sessions = simulate.generate(11, "heldout", 1, (20, 30), ("chat", "distill"))
    return dataset.build_windows(sessions)


def test_tiny_training_writes_a_consistent_artifact(tiny_artifact: Path) -> None:
    meta = json.loads(tiny_artifact.read_text())
    artifact = Artifact.load(tiny_artifact)
    assert artifact.version.startswith("tiny+")
    assert artifact.onnx_path.exists() and artifact.torch_path and artifact.torch_path.exists()
    assert 0 < artifact.threshold <= 1
    assert len(meta["stats_reference"]) == len(meta["stat_names"])
    w = _windows()
    onnx = OnnxScorer(artifact.onnx_path, ["CPUExecutionProvider"])
    model = load_torch(artifact.torch_path)
    with torch.inference_mode():
        expected = model(torch.from_numpy(w.seq), torch.from_numpy(w.mask),
                         torch.from_numpy(w.stats)).numpy()
    got = onnx.score(w.seq, w.mask, w.stats)
    assert got.shape == (len(w),)
    assert np.allclose(got, expected, atol=1e-5)


def test_cpu_scorer_for_auto_and_cpu(tiny_artifact: Path) -> None:
    artifact = Artifact.load(tiny_artifact)
    assert load_scorer(artifact, "cpu").name == "onnx-cpu"
    if not torch.cuda.is_available():
        assert load_scorer(artifact, "auto").name == "onnx-cpu"
        torch_cpu = load_scorer(artifact, "cpu", backend="torch")
        assert torch_cpu.name == "torch-cpu"
        try:
            load_scorer(artifact, "cuda")
        except RuntimeError as exc:
            assert "cuda" in str(exc).lower()
        else:
            raise AssertionError("cuda without a GPU must be refused")


def test_shipped_artifact_is_small_and_separates_attack_from_chat() -> None:
    artifact = Artifact.load(DEFAULT_ARTIFACT)
    size = sum(p.stat().st_size for p in DEFAULT_ARTIFACT.parent.iterdir())
    assert size < 300_000
    w = _windows()
    scores = load_scorer(artifact, "cpu").score(w.seq, w.mask, w.stats)
    late = w.position >= 16
    attack = scores[(w.labels == 1) & late]
    benign = scores[(w.labels == 0) & late]
    assert attack.min() > artifact.threshold > benign.max()


def test_shipped_artifact_explains_logit_stealing_in_plain_words() -> None:
    from gateway.detect import explain, window

    artifact = Artifact.load(DEFAULT_ARTIFACT)
    session = simulate.generate(31, "heldout", 1, (64, 64), ("logit_steal",))[0]
    w = window.build(dataset.session_features(session), artifact.window)
    found = explain.reasons(load_scorer(artifact, "cpu"), artifact, w)
    assert found[0].startswith("logprob / logit-bias probing")


def test_a_window_without_errors_never_cites_errors_as_a_reason() -> None:
    """Reasons are evidence the window shows: all-200 harvesting is not 'rate-limit hits'."""
    from gateway.detect import explain, window

    artifact = Artifact.load(DEFAULT_ARTIFACT)
    scorer = load_scorer(artifact, "cpu")
    for profile in ("distill", "self_instruct", "logit_steal"):
        session = simulate.generate(5, "heldout", 1, (64, 64), (profile,))[0]
        items = dataset.session_features(session)
        w = window.build(items, artifact.window)
        errors = window.SEQ_NAMES.index("error"), window.SEQ_NAMES.index("rate_limited")
        assert not w.seq[w.mask > 0][:, errors].any()
        assert not any(r.startswith("errors and rate-limit") for r in
                       explain.reasons(scorer, artifact, w, top=len(explain.GROUPS),
                                       min_gain=-1.0))
