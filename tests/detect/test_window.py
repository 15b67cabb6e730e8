"""Window math: encoding, PRADA statistic, and the statistics that separate behaviours."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.detect import features, window
from tests.detect.conftest import record


def _items(prompts: list[str], gap: float = 1.0) -> list[features.RequestFeatures]:
    return [features.extract(*record(p, ts=1e9 + i * gap, rid=f"r{i}"))
            for i, p in enumerate(prompts)]


def test_encode_decode_roundtrip() -> None:
    item = features.extract(*record("some prompt text here", rid="req_abc", max_tokens=5,
                                    client_addr="1.2.3.4"))
    back = window.decode(window.encode(item))
    assert back.request_id == "req_abc"
    assert back.ts == item.ts and back.simhash == item.simhash and back.network == item.network
    assert np.allclose(back.vector, item.vector)
    assert np.array_equal(back.minhash, item.minhash)


def test_shapiro_francia_separates_normal_from_clumped() -> None:
    rng = np.random.default_rng(0)
    assert window.shapiro_francia(rng.normal(size=60)) > 0.95
    clumped = np.concatenate([np.zeros(50), np.ones(10)]) + rng.normal(scale=0.01, size=60)
    assert window.shapiro_francia(clumped) < 0.8
    assert window.shapiro_francia(np.ones(3)) == 1.0


def test_near_duplicates_and_templates_show_in_stats() -> None:
    stat = dict.fromkeys(window.STAT_NAMES)
    base = "Classify the sentiment of this review about the hotel room and the breakfast"
    perturbed = [base.replace("hotel", w) for w in ("motel", "inn", "hostel", "lodge")] * 5
    diverse = [f"Tell me about topic number {i} {w} in history and science"
               for i, w in enumerate("alpha beta gamma delta eps zeta eta theta iota kappa "
                                     "lambda mu nu xi omicron pi rho sigma tau upsilon".split())]
    a = window.build(_items(perturbed), 64)
    b = window.build(_items(diverse), 64)
    names = list(stat)
    near = names.index("near_duplicate_share")
    assert a.stats[near] > b.stats[near]
    assert a.stats[names.index("distance_mean")] < b.stats[names.index("distance_mean")]
    assert a.signature_strength > 0.3


def test_window_is_bounded_and_masked() -> None:
    items = _items([f"prompt {i} words here" for i in range(100)])
    w = window.build(items, 64)
    assert w.seq.shape == (64, window.N_SEQ) and w.mask.sum() == 64
    short = window.build(items[:5], 64)
    assert short.mask.sum() == 5 and not short.seq[5:].any()
    seq, _, stats = window.stack([w, short])
    assert seq.shape == (2, 64, window.N_SEQ) and stats.shape == (2, window.N_STATS)


def test_regular_timing_shows_in_gap_cv() -> None:
    regular = window.build(_items([f"p {i}" for i in range(30)], gap=2.0), 64)
    rng = np.random.default_rng(1)
    items = _items([f"p {i}" for i in range(30)])
    ts = np.cumsum(rng.exponential(60, size=30))
    jittered = [features.RequestFeatures(it.request_id, 1e9 + t, it.vector, it.simhash,
                                         it.minhash, it.network) for it, t in zip(items, ts,
                                                                                 strict=True)]
    irregular = window.build(jittered, 64)
    cv = window.STAT_NAMES.index("gap_cv")
    assert regular.stats[cv] < 0.05 < irregular.stats[cv]


def test_accounts_taken_in_turn_keep_their_own_pace_and_share_the_window() -> None:
    """Several accounts judged as one: each account's requests follow the previous account's,
    at the account's own gaps, never interleaved into a burst no client sends."""
    from gateway.detect.features import N_FEATURES, RequestFeatures
    from gateway.detect.window import in_turn

    def account(name: str, start: float, gap: float, n: int) -> list[RequestFeatures]:
        return [RequestFeatures(f"{name}{i}", start + gap * i, np.zeros(N_FEATURES, np.float32),
                                0, np.zeros(16, np.uint32), 0) for i in range(n)]

    slow = account("slow", 1000.0, 600.0, 5)
    fast = account("fast", 1010.0, 2.0, 5)
    merged = in_turn([fast, slow], 64)
    assert [it.request_id for it in merged] == [*(f"slow{i}" for i in range(5)),
                                                *(f"fast{i}" for i in range(5))]
    gaps = np.diff([it.ts for it in merged])
    assert list(gaps[:4]) == [600.0] * 4 and list(gaps[5:]) == [2.0] * 4
    assert gaps[4] == 2.0  # the next account starts at its own median gap
    # An equal share of the window each: the latest requests of every account.
    assert [it.request_id for it in in_turn([slow, fast], 4)] == ["slow3", "slow4", "fast3",
                                                                  "fast4"]


def test_slot_counts_match_counting_by_hand_padding_and_all_ones_values_included() -> None:
    """Per request and MinHash slot, how many requests of its window share the value; an
    empty prompt's all-ones slots (the padding's value too) are counted among real requests
    only."""
    rng = np.random.default_rng(3)
    mh = rng.integers(0, 4, (6, 16, features.MINHASH_K)).astype(np.uint32)
    mh[rng.random(mh.shape) < 0.2] = 0xFFFFFFFF
    ns = np.array([0, 1, 5, 9, 16, 16])
    mask = np.arange(16)[None, :] < ns[:, None]
    counts = window._slot_counts(mh, mask)
    for b, n in enumerate(ns):
        for i in range(16):
            for k in range(features.MINHASH_K):
                expected = int((mh[b, :n, k] == mh[b, i, k]).sum()) if i < n else 0
                assert counts[b, i, k] == expected


def test_pair_mean_is_the_mean_distance_over_pairs() -> None:
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 65, (3, 8, 8)).astype(np.uint8)
    pairs = np.triu(np.ones((8, 8), dtype=bool), k=1)[None] & (rng.random((3, 8, 8)) < 0.5)
    pairs[2] = False
    out = window._pair_mean(bits, pairs)
    for b in range(2):
        assert out[b] == (bits[b][pairs[b]] / 64).mean()
    assert out[2] == 0.5, "no pairs: the neutral value"


def test_probing_around_seeds_is_clustered_content_and_a_template_with_new_items_is_not() -> None:
    """PRADA's queries perturb a few seeds, behind a template or not; a labelling batch puts a
    different item into one template every time. Only the first sends its content again."""
    seeds = ["the quick brown fox jumps over the lazy dog near the river bank today",
             "a stitch in time saves nine when the weather turns cold and wet outside",
             "all that glitters is not gold but silver shines brightly in the morning"]
    rng = np.random.default_rng(5)
    probes, labels = [], []
    for i in range(48):
        words = seeds[i % 3].split()
        words[int(rng.integers(len(words)))] = f"w{i}"
        probes.append(f"Ref: case-{i}\nTask: classify\n" + " ".join(words))
        item = " ".join(f"item{i}x{j}" for j in range(12))
        labels.append(f"Label the message with its topic. One word.\nMessage: {item}\nLabel:")
    col = window.STAT_NAMES.index("clustered_share")
    probing = window.build(_items(probes), 64).stats[col]
    labelling = window.build(_items(labels), 64).stats[col]
    assert probing > 0.5 and labelling < probing / 4
    seq = window.build(_items(probes), 64).seq[:, window.SEQ_NAMES.index("clustered")]
    assert np.mean(seq[:48]) == pytest.approx(probing, abs=1e-6)
