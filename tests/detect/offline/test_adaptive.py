"""``gateway evaluate --suite adaptive``, small size: the report's structure and invariants."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.detect.offline import adaptive, corpus, evasions
from gateway.detect.offline import engine_replay as online
from gateway.detect.offline.real_attacks import ATTACK_FNS
from gateway.detect.offline.real_traffic import BENIGN_FNS
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact, load_scorer

SMALL = adaptive.SIZES["small"]


@pytest.fixture(scope="module")
def report() -> adaptive.AdaptiveReport:
    return adaptive.run(DEFAULT_ARTIFACT, SMALL, seed=11, log=lambda _: None)


def test_every_attack_meets_every_evasion_once(report: adaptive.AdaptiveReport) -> None:
    pairs = [(c.attack, c.evasion) for c in report.cells]
    assert sorted(pairs) == sorted((a, e) for a in ATTACK_FNS for e in evasions.DEFAULT)
    assert all(c.operations == SMALL.operations and c.accounts >= c.operations
               for c in report.cells)


def test_rates_are_shares_and_harvests_are_counts(report: adaptive.AdaptiveReport) -> None:
    for c in report.cells:
        for rate in (c.flagged, c.flagged_shipped, c.campaign_operations):
            assert 0.0 <= rate <= 1.0
        for spread in (c.harvest_completions, c.harvest_tokens, c.before_campaign_completions,
                       c.harvest_completions_shipped):
            assert 0 <= spread.median <= spread.worst
        assert c.harvest_completions.worst <= c.total_completions.worst
        assert c.harvest_completions_shipped.worst <= c.total_completions.worst
        assert c.before_campaign_completions.worst <= c.total_completions.worst
        assert c.requests_to_flag is None or c.requests_to_flag >= 1
    for row in report.benign:
        assert min(row.flagged, row.flagged_shipped, row.campaign) >= 0.0
        assert max(row.flagged, row.flagged_shipped, row.campaign) <= 1.0
    for s in (report.no_evasion, report.all_cells):
        assert min(s.auc, s.tpr_1, s.tpr_01) >= 0.0 and max(s.auc, s.tpr_1, s.tpr_01) <= 1.0


def test_the_threshold_is_fixed_on_benign_calibration_traffic_alone(
        report: adaptive.AdaptiveReport) -> None:
    pool = corpus.pool("calibration", SMALL.limits)
    sessions = adaptive.benign_population(pool, SMALL, seed=11)
    assert sessions and all(s.label == 0 for s in sessions)
    artifact = Artifact.load(DEFAULT_ARTIFACT)
    result = asyncio.run(online.replay(sessions, load_scorer(artifact, "cpu"), artifact,
                                       adaptive.group_of))
    peaks = adaptive.benign_peaks(sessions, result)  # harnesses as declared
    assert report.threshold == adaptive.calibrate(peaks)
    assert report.calibration_flag_rate <= report.benign_target


def test_held_out_sources_are_disjoint_from_training_and_calibration(
        report: adaptive.AdaptiveReport) -> None:
    train, cal, held = (set(report.sources[s]) for s in ("train", "calibration", "heldout"))
    assert held and cal and train
    assert not held & train and not cal & train and not held & cal


def test_every_benign_profile_is_reported_separately(report: adaptive.AdaptiveReport) -> None:
    """Declared profiles twice: as the operator declared them, and as if nobody had."""
    expected = [name for p in BENIGN_FNS for name in (
        (p, p + adaptive.UNDECLARED_SUFFIX) if p in adaptive.DECLARED_PROFILES else (p,))]
    assert [r.profile for r in report.benign] == expected
    assert all(r.accounts > 0 for r in report.benign)
    rows = {r.profile: r for r in report.benign}
    for p in adaptive.DECLARED_PROFILES:
        declared, undeclared = rows[p], rows[p + adaptive.UNDECLARED_SUFFIX]
        assert declared.flagged <= undeclared.flagged  # a declaration only ever withholds


def test_only_harnesses_and_the_declared_evasion_are_declared() -> None:
    assert adaptive.attack_workload("declared+greedy") == adaptive.DECLARED
    assert adaptive.attack_workload("declared") == adaptive.DECLARED
    assert adaptive.attack_workload("greedy") is None
    assert adaptive.attack_workload("none") is None
    pool = corpus.pool("calibration", SMALL.limits)
    for s in adaptive.benign_population(pool, SMALL, seed=3):
        assert (adaptive.benign_workload(s) is not None) == (s.profile == "eval_harness")


def test_declared_operations_harvest_their_allowance_and_send_past_it(
        report: adaptive.AdaptiveReport) -> None:
    """The allowance is the bound a declaration buys: a declared operation sends more than it,
    so that its cell shows the flag past it rather than a harvest that never reached it."""
    declared = [c for c in report.cells if adaptive.attack_workload(c.evasion)]
    assert {c.evasion for c in declared} == {"declared", "declared+greedy"}
    for c in declared:
        assert c.total_completions.median > adaptive.SUITE_ALLOWANCE
        if c.accounts == c.operations:  # one account: its verdicts withheld up to the allowance
            assert c.harvest_completions.median >= adaptive.SUITE_ALLOWANCE * 0.9
        else:  # accounts of one operation, each within its allowance: a campaign is not withheld
            assert c.flagged > 0.5
    assert adaptive.operation_requests(SMALL, "declared") == (
        SMALL.requests + adaptive.SUITE_ALLOWANCE)
    assert adaptive.operation_requests(SMALL, "greedy") == SMALL.requests


def test_calibration_flags_no_more_than_the_target() -> None:
    peaks = [i / 1000 for i in range(1000)]
    threshold = adaptive.calibrate(peaks, 0.005)
    assert sum(p >= threshold for p in peaks) == 5
    assert adaptive.calibrate([0.2, 0.9], 0.005) > 0.9  # too few accounts: above the highest
    assert adaptive.calibrate([1.0] * 10, 0.005) > 1.0  # saturated benign risk: never flag


def test_the_cli_prints_the_tables_and_writes_the_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = replace(SMALL, operations=1, users=2, automation=1, combos=("none", "sybil_split"))
    monkeypatch.setitem(adaptive.SIZES, "small", tiny)
    out = tmp_path / "adaptive.json"
    assert main(["evaluate", "--suite", "adaptive", "--size", "small", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for needle in ("flag threshold", "ROC AUC", "benign (held-out)", "sybil_split", "ci_smoke"):
        assert needle in printed
    data = json.loads(out.read_text())
    assert {c["evasion"] for c in data["cells"]} == {"none", "sybil_split"}
    assert data["threshold"] > 0 and data["benign"]


def test_benign_accounts_are_swept_together_and_each_operation_alone() -> None:
    """Campaign sweeps see every benign account of a split at once (unrelated organisations
    share SDK defaults and open templates, so a false campaign across them must be measurable),
    and each attack operation's accounts on their own."""
    assert adaptive.group_of("heldout|user|3|0") == adaptive.group_of("heldout|org_nat|1|2") \
        == "heldout"
    assert adaptive.group_of("sybil|sybil_split|4|17") == "sybil|sybil_split|4"
    assert adaptive.group_of("sybil|sybil_split|4|17") != adaptive.group_of("sybil|none|4|0")
