"""Retraining data from real text: the train split only, every automation profile a negative,
every attack under every single evasion; the threshold is a real benign calibration quantile."""

from __future__ import annotations

from collections import Counter

import numpy as np

from gateway.detect.offline import adaptive, corpus, dataset, evasions, real_training, simulate
from gateway.detect.offline.real_attacks import ATTACK_FNS
from gateway.detect.offline.real_traffic import BENIGN, to_record


def test_training_traffic_covers_every_benign_profile_and_every_evasion() -> None:
    sessions = real_training.training_sessions(real_training.SCALES["small"], seed=5)
    negatives = Counter(s.profile for s in sessions if s.label == 0)
    assert set(BENIGN) <= set(negatives)
    groups = {adaptive.group_of(s.account) for s in sessions if s.label == 1}
    combos = {g.split(adaptive.SEP)[1] for g in groups}
    singles = set(evasions.SINGLE) - {"sybil_split"} - evasions.ACCOUNT_ONLY
    assert singles <= combos and "none" in combos
    assert not evasions.ACCOUNT_ONLY & combos  # nothing in the traffic to teach
    assert {g.split(adaptive.SEP)[0] for g in groups} == set(ATTACK_FNS)


def test_training_traffic_comes_from_the_train_split_alone() -> None:
    sessions = real_training.training_sessions(real_training.SCALES["small"], seed=5)
    assert sessions and all(s.account.startswith("train|") for s in sessions if s.label == 0)


def test_concatenated_windows_keep_each_session_distinct() -> None:
    sim = simulate.generate(2, "train", 1, (12, 12), ("chat", "distill"))
    real = real_training.training_sessions(real_training.SCALES["small"], seed=5)[:3]
    a = dataset.build_windows(sim)
    b = dataset.build_windows(real, record=to_record)
    both = dataset.concat([(a, len(sim)), (b, len(real))])
    assert len(both) == len(a) + len(b)
    assert set(both.session[len(a):].tolist()) == {len(sim) + i for i in set(b.session.tolist())}
    labels = np.array([s.label for s in [*sim, *real]])
    assert np.array_equal(both.labels, labels[both.session].astype(np.float32))


def test_greedy_distillation_is_taught_but_not_a_harness_first_pass() -> None:
    """Temperature 0 on open-ended prompts is an attack the model must learn (window-v2 let it
    through); chain-of-thought on benchmark questions at temperature 0 is what an evaluation
    harness sends, and is left out of the positives (real_training.NOT_TAUGHT)."""
    sessions = real_training.training_sessions(real_training.SCALES["small"], seed=5)
    cells = {tuple(adaptive.group_of(s.account).split(adaptive.SEP)[:2])
             for s in sessions if s.label == 1}
    assert ("distill", "greedy") in cells and ("self_instruct", "greedy") in cells
    assert ("distill_cot", "greedy") not in cells and ("distill_cot", "none") in cells
    assert all(cell not in cells for cell in real_training.NOT_TAUGHT)


def _diluted_harvest() -> list[simulate.Session]:
    pool = corpus.pool("train", real_training.SCALES["small"].limits)
    return adaptive.operation(pool, "prada", "dilute50", 0, 48, seed=5)


def test_a_diluted_harvest_is_taught_per_client_and_its_cover_as_a_person() -> None:
    """Taught per client (``gateway train --by-client``), each window is read as the runtime
    scores it: the harvesting client alone is a positive, the cover conversations alone are a
    person's traffic, and no window mixes the two (phase 18: window-v12, taught whole windows
    only, read a diluted PRADA harvest split off at its cover's pace as benign)."""
    session = _diluted_harvest()[0]
    assert session.label == 1
    harvest = [r.harvest for r in session.requests]
    assert 0 < sum(harvest) < len(harvest)
    w = dataset.build_windows([session], record=to_record, by_client=True)
    per_position = Counter(w.position.tolist())
    assert max(per_position.values()) == 2  # two clients, each read alone
    assert {0.0, 1.0} == set(w.labels.tolist())
    whole = dataset.build_windows([session], record=to_record)
    assert set(Counter(whole.position.tolist()).values()) == {1}
    assert set(whole.labels.tolist()) == {1.0}
    assert len(w) > len(whole)


def test_whole_windows_keep_their_session_label_as_before() -> None:
    """Without ``--by-client`` (the shipped recipe) every window of an attack account is a
    positive, its cover-only opening window included: the defaults reproduce window-v12."""
    pool = corpus.pool("train", real_training.SCALES["small"].limits)
    sessions = [s for j in range(12)
                for s in adaptive.operation(pool, "distill", "dilute75", j, 48, seed=5)]
    opening = [s for s in sessions if not any(r.harvest for r in s.requests[:8])]
    assert opening  # dilution that opens with eight cover requests
    whole = dataset.build_windows(opening, record=to_record)
    assert set(whole.labels.tolist()) == {1.0}
    split = dataset.build_windows(opening, record=to_record, by_client=True)
    assert 0.0 in split.labels.tolist()
