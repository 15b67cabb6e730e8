"""Training, ONNX export and the scorers: a tiny run, and the shipped artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from gateway.detect.features import MINHASH_K, N_FEATURES, RequestFeatures
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
    assert size < 400_000  # four models of ~84 KB: the first, the last two shipped, window-v2
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


def test_forged_cues_raise_only_what_decoration_raises_and_keep_the_statistics_true() -> None:
    """What training does to a window as a decorating client would: the listed cues go up (never
    down), prompts grow by one factor per window (sizes up, output/input ratio down), nothing
    else moves, padding stays empty, and a forged window's mean_/std_ statistics are those
    :func:`gateway.detect.window.build_batch` computes from its forged requests."""
    from gateway.detect import window
    from gateway.detect.features import FEATURE_NAMES, FORGEABLE
    from gateway.detect.offline.train import forge_cues

    w = _windows()
    copies = -(-400 // len(w))  # enough windows for the shares below to be stable
    seq, mask, stats = (torch.from_numpy(a).repeat(copies, *([1] * (a.ndim - 1)))
                        for a in (w.seq, w.mask, w.stats))
    forged, fstats = forge_cues(seq, mask, stats, 1.0, torch.Generator().manual_seed(3))
    cues = [FEATURE_NAMES.index(n) for n in FORGEABLE]
    chars, words, ratio = (FEATURE_NAMES.index(n) for n in (
        "prompt_chars_log", "prompt_words_log", "output_input_ratio"))
    others = [c for c in range(seq.shape[2]) if c not in {*cues, chars, words, ratio}]
    assert torch.equal(forged[:, :, others], seq[:, :, others])
    assert bool((forged[:, :, cues] >= seq[:, :, cues]).all())
    assert bool((forged[:, :, cues] <= 1.0).all())
    assert bool((forged[mask == 0] == seq[mask == 0]).all())
    raised = (forged[:, :, cues] != seq[:, :, cues]).any(dim=1)  # (windows, cues)
    assert 0.3 < float(raised.float().mean()) < 0.7  # each cue with even chance
    growth = (forged[:, :, chars] - seq[:, :, chars]) * 8  # log of the factor, per request
    assert bool((growth >= -1e-6).all())
    real = mask > 0
    assert torch.allclose((forged[:, :, words] - seq[:, :, words]) * 6 * mask, growth * mask,
                          atol=1e-5)
    one = growth.amax(dim=1, keepdim=True)
    assert torch.allclose(growth * mask, one * mask, atol=1e-5)  # one factor per window
    assert 0.3 < float((one[:, 0] > 1e-6).float().mean()) < 0.7
    assert bool((forged[:, :, ratio][real] <= seq[:, :, ratio][real] + 1e-6).all())
    for i in range(0, len(seq), max(1, len(seq) // 20)):
        n = int(mask[i].sum())
        expected = window.build([_item(forged[i, j].numpy()) for j in range(n)],
                                seq.shape[1]).stats
        for name in FEATURE_NAMES:
            for stat in (f"mean_{name}", f"std_{name}"):
                k = window.STAT_NAMES.index(stat)
                assert abs(float(fstats[i, k]) - float(expected[k])) < 1e-5, (i, stat)


def test_no_forging_at_zero_chance_leaves_the_windows_as_they_were() -> None:
    from gateway.detect.offline.train import forge_cues

    w = _windows()
    seq, mask, stats = (torch.from_numpy(a) for a in (w.seq, w.mask, w.stats))
    forged, fstats = forge_cues(seq, mask, stats, 0.0, torch.Generator().manual_seed(3))
    assert torch.equal(forged, seq) and torch.equal(fstats, stats)


def _item(row: npt.NDArray[np.float32]) -> RequestFeatures:
    """A request with the features of one window row (its place in the window left out)."""
    return RequestFeatures("r", 0.0, row[:N_FEATURES].astype(np.float32), 0,
                           np.zeros(MINHASH_K, np.uint32), 0)
