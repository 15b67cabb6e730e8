"""Risk policy arithmetic and the evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.detect import risk
from gateway.detect.offline import measures as evaluation
from gateway.detect.offline.dataset import Windows

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
    """The evidence -ln(1 - risk) halves per half-life: a small risk halves with it."""
    state = risk.RiskState(0.02, 1000.0, 0.9)
    assert risk.decayed(state, 1000.0 + DAY, DAY) == pytest.approx(0.01, rel=0.01)
    high = risk.RiskState(0.8, 1000.0, 0.9)
    assert risk.decayed(high, 1000.0 + DAY, DAY) == pytest.approx(1 - 0.2 ** 0.5)
    assert risk.update(high, 0.0, 1000.0 + 4 * DAY, DAY).risk < 0.2
    assert risk.decayed(risk.RiskState(1.0, 1000.0), 1000.0 + DAY, DAY) < 1.0


def test_slow_pacing_is_no_alibi() -> None:
    """An account scored certain once an hour (low-and-slow extraction) climbs to any threshold
    benign traffic sets: its risk is not bled away between scorings."""
    state, now = risk.RiskState(), 0.0
    for _ in range(12):
        now += 3600.0
        state = risk.update(state, 0.99999, now, 3 * DAY)
    assert state.risk > 0.9999
    silent = risk.decayed(state, now + 3 * DAY, 3 * DAY)
    assert 0.99 < silent < state.risk  # three days of silence: still high, but lower


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


def test_a_scoring_of_several_client_windows_counts_its_highest_once() -> None:
    """Offline replay follows the runtime: the parts of one scoring (one per client) give the
    account the highest of their scores, one risk update, not one update per part."""
    def windows(positions: list[int], n: int) -> Windows:
        z = np.zeros((n, 1, 1), np.float32)
        return Windows(z, z[:, :, 0], z[:, 0], np.zeros(n, np.float32), np.zeros(n, np.int64),
                       np.array(positions, np.int64), np.zeros(n, np.float32),
                       np.array([10.0 * p for p in positions]))
    split = evaluation.replay(windows([8, 8, 12, 12], 4), np.array([0.1, 0.9, 0.9, 0.2]), 1)
    single = evaluation.replay(windows([8, 12], 2), np.array([0.9, 0.9]), 1)
    assert split.peak[0] == pytest.approx(single.peak[0])
    twice = evaluation.replay(windows([8, 8, 12, 12], 4), np.array([0.9, 0.9, 0.9, 0.9]), 1)
    assert twice.peak[0] == pytest.approx(single.peak[0])  # parts are not extra evidence
