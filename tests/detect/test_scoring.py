"""An artifact reads its inputs by name: features added since it was trained do not reach it,
and one naming an input this build does not compute is refused at load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gateway.detect.features import F32
from gateway.detect.scoring import (
    ARTIFACTS_DIR,
    DEFAULT_ARTIFACT,
    Artifact,
    OnnxScorer,
    Projected,
    load_scorer,
)
from gateway.detect.window import SEQ_NAMES, STAT_NAMES

OLD = ARTIFACTS_DIR / "window-v7.json"
"""Shipped before ``clustered`` and ``clustered_share`` were computed."""


def _inputs(seed: int = 0) -> tuple[F32, F32, F32]:
    rng = np.random.default_rng(seed)
    seq = rng.random((3, 64, len(SEQ_NAMES)), dtype=np.float32)
    return seq, np.ones((3, 64), np.float32), rng.random((3, len(STAT_NAMES)), dtype=np.float32)


def test_an_older_artifact_scores_its_own_columns_whatever_was_added_since() -> None:
    artifact = Artifact.load(OLD)
    meta = json.loads(OLD.read_text())
    assert artifact.seq_columns and artifact.stat_columns
    assert [SEQ_NAMES[i] for i in artifact.seq_columns] == meta["seq_names"]
    assert [STAT_NAMES[i] for i in artifact.stat_columns] == meta["stat_names"]
    seq, mask, stats = _inputs()
    raw = OnnxScorer(artifact.onnx_path, ["CPUExecutionProvider"])
    expected = raw.score(np.ascontiguousarray(seq[..., list(artifact.seq_columns)]), mask,
                         np.ascontiguousarray(stats[..., list(artifact.stat_columns)]))
    scorer = load_scorer(artifact, "cpu")
    assert np.allclose(scorer.score(seq, mask, stats), expected)
    added_seq = [i for i in range(len(SEQ_NAMES)) if i not in artifact.seq_columns]
    added_stats = [i for i in range(len(STAT_NAMES)) if i not in artifact.stat_columns]
    seq[..., added_seq], stats[..., added_stats] = 9.0, 9.0
    assert np.allclose(scorer.score(seq, mask, stats), expected)
    torch_scorer = load_scorer(artifact, "cpu", backend="torch")
    assert np.allclose(torch_scorer.score(seq, mask, stats), expected, atol=1e-5)


class Recording:
    name = "recording"

    def __init__(self) -> None:
        self.seen: list[tuple[F32, F32]] = []

    def score(self, seq: F32, mask: F32, stats: F32) -> F32:
        self.seen.append((seq, stats))
        return np.zeros(len(seq), np.float32)


def test_columns_are_handed_over_in_the_artifacts_order() -> None:
    inner = Recording()
    seq, mask, stats = _inputs(1)
    Projected(inner, (4, 0, 2), (1, 0)).score(seq, mask, stats)
    got_seq, got_stats = inner.seen[0]
    assert np.array_equal(got_seq, seq[..., [4, 0, 2]])
    assert np.array_equal(got_stats, stats[..., [1, 0]])
    assert got_seq.flags.c_contiguous and got_stats.flags.c_contiguous


def _copy(tmp_path: Path, **changes: object) -> Path:
    meta = json.loads(OLD.read_text())
    meta.update(changes)
    for key in ("onnx", "torch"):
        meta[key] = str(OLD.parent / meta[key])
    path = tmp_path / "artifact.json"
    path.write_text(json.dumps(meta))
    return path


def test_an_artifact_naming_an_input_not_computed_here_is_refused(tmp_path: Path) -> None:
    meta = json.loads(OLD.read_text())
    path = _copy(tmp_path, seq_names=[*meta["seq_names"][:-1], "telepathy"])
    with pytest.raises(ValueError, match="telepathy"):
        Artifact.load(path)


def test_references_are_in_the_current_order_with_zero_where_not_read() -> None:
    artifact = Artifact.load(OLD)
    meta = json.loads(OLD.read_text())
    assert len(artifact.seq_reference) == len(SEQ_NAMES)
    for name, value in zip(meta["seq_names"], meta["seq_reference"], strict=True):
        assert artifact.seq_reference[SEQ_NAMES.index(name)] == pytest.approx(value)
    for i in set(range(len(SEQ_NAMES))) - set(artifact.seq_columns):
        assert artifact.seq_reference[i] == 0.0
    for name, value in zip(meta["stat_names"], meta["stats_reference"], strict=True):
        assert artifact.stats_reference[STAT_NAMES.index(name)] == pytest.approx(value)
    for i in set(range(len(STAT_NAMES))) - set(artifact.stat_columns):
        assert artifact.stats_reference[i] == 0.0


def test_the_shipped_artifact_reads_every_current_input_unprojected() -> None:
    artifact = Artifact.load(DEFAULT_ARTIFACT)
    assert artifact.seq_columns == () and artifact.stat_columns == ()
    scorer = load_scorer(artifact, "cpu")
    assert not isinstance(scorer, Projected)
    assert scorer.score(*_inputs(2)).shape == (3,)


def test_explanations_cite_only_inputs_the_artifact_reads() -> None:
    """A window that differs from the benign references only in clustered content shows the
    perturbed-queries group to a model that reads it, and nothing to one trained before it."""
    from gateway.detect import explain
    from gateway.detect.window import WindowArrays

    seq, mask, stats = _inputs(3)
    label = next(k for k, names in explain.GROUPS.items() if "clustered" in names)
    window = WindowArrays(seq[0], mask[0], stats[0], np.zeros(16, np.uint32), 0.0, 0,
                          np.zeros(0))
    seq_ref, stats_ref = seq[0, 0].copy(), stats[0].copy()
    window.seq[:] = seq_ref
    window.seq[:, SEQ_NAMES.index("clustered")] = seq_ref[SEQ_NAMES.index("clustered")] + 0.5
    for artifact, shown in ((Artifact.load(OLD), False), (Artifact.load(DEFAULT_ARTIFACT), True)):
        assert explain._observed(window, seq_ref, stats_ref, explain.GROUPS[label],
                                 artifact) is shown
