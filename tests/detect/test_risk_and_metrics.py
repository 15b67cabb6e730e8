"""Risk policy arithmetic and the evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.detect import risk
from gateway.detect.offline import measures as evaluation

DAY = 86400.0


def test_risk_rises_with_evidence_not_with_one_window() -> None:
    state = risk.RiskState()
    state = risk.update(state, 0.95, 100.0, DAY)
    assert 0.5 < state.risk < 0.8  # one window: well short of any flag threshold
    state = risk.update(state, 0.95, 101.0, DAY)
    state = risk.update(state, 0.95, 102.0, DAY)
    assert state.risk > 0.9
    state = risk.update(state, 0.0, 103.0, DAY)
    assert state.risk > 0.6  # one benign-looking window does not clear an account


def test_risk_decays_with_half_life() -> None:
    state = risk.RiskState(0.8, 1000.0, 0.9)
    assert risk.decayed(state, 1000.0 + DAY, DAY) == pytest.approx(0.4)
    assert risk.update(state, 0.0, 1000.0 + 2 * DAY, DAY).risk < 0.2


def test_auc_and_tpr_at_fpr() -> None:
    labels = np.array([0] * 1000 + [1] * 10)
    scores = np.concatenate([np.linspace(0, 0.5, 1000), np.full(10, 0.9)])
    assert evaluation.roc_auc(scores, labels) == 1.0
    scores[999] = 0.95  # one benign account above every attacker
    assert evaluation.tpr_at_fpr(scores, labels, 0.001) == 1.0
    assert evaluation.tpr_at_fpr(scores, labels, 0.0) == 0.0
    assert evaluation.roc_auc(scores, labels) == pytest.approx(0.999)


def test_calibration_leaves_a_margin_above_benign() -> None:
    assert evaluation.calibrate(np.array([0.1, 0.2])) == pytest.approx(0.6)
    assert evaluation.calibrate(np.array([])) == pytest.approx(0.5)
