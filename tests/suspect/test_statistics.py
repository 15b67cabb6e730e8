"""The suspect test's statistics: exact tails, fast scoring identical to the reference, the null
(per-key p-values uniform, group sums Binomial(n*k, gamma), family-wise error at most alpha
over keys and looks), deduplication, and power on simulated radioactive suspects."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.suspect.binomial import log10_upper_tail, log10_upper_tails
from gateway.suspect.candidates import build_candidates
from gateway.suspect.evidence import Evidence
from gateway.suspect.pairs import PairSet, reply_pairs
from gateway.suspect.prompts import prompt_stream
from gateway.suspect.runner import Plan, run_suspect
from gateway.suspect.scoring import green_counts_fast
from gateway.suspect.sequential import SequentialTest
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.detector import binomial_upper_tail, green_counts
from gateway.watermark.keys import derive_key
from tests.suspect.support import GAMMA, WIDTH, SimulatedSuspect, docstring_bytes

SECRET = b"suspect-test-secret-0123456789abcdef"
CONFIG = WatermarkConfig(gamma=GAMMA, width=WIDTH)


def random_keys(rng: np.random.Generator, k: int) -> np.ndarray:
    return rng.integers(0, 2**32, (k, 2), dtype=np.int64)


def null_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct pairs of real unwatermarked text."""
    pairs = PairSet(WIDTH)
    ctx, tokens = pairs.add([], docstring_bytes())
    assert len(tokens) >= n
    return ctx[:n], tokens[:n]


def test_fast_scoring_matches_the_reference_hash() -> None:
    rng = np.random.default_rng(1)
    keys = random_keys(rng, 300)
    ctx = rng.integers(0, 2**32, 700, dtype=np.int64)
    tokens = rng.integers(0, 257, 700, dtype=np.int64)
    for gamma in (0.1, 0.25, 0.5):
        assert np.array_equal(green_counts_fast(ctx, tokens, keys, gamma),
                              green_counts(ctx, tokens, keys, gamma))


def test_log_tails_match_the_exact_table_and_go_below_double_precision() -> None:
    n = 600
    table = binomial_upper_tail(n, GAMMA)
    for g in (1, 100, 150, 170, 250, 400):
        assert log10_upper_tail(n, g, GAMMA) == pytest.approx(math.log10(table[g]), abs=1e-6)
    greens = np.array([0, 150, 200, 600])
    assert np.allclose(log10_upper_tails(n, greens, GAMMA)[:3],
                       [math.log10(table[g]) for g in greens[:3]], atol=1e-6)
    assert log10_upper_tail(n, n, GAMMA) == pytest.approx(n * math.log10(GAMMA))
    assert log10_upper_tail(n, 0, GAMMA) == 0.0


def test_per_key_p_values_on_unwatermarked_text_are_uniform() -> None:
    ctx, tokens = null_pairs(1500)
    keys = random_keys(np.random.default_rng(2), 4000)
    counts = green_counts_fast(ctx, tokens, keys, GAMMA)
    p = 10 ** log10_upper_tails(len(tokens), counts, GAMMA)
    for level in (0.01, 0.05, 0.2, 0.5):
        # discrete tails are conservative: P(p <= level) <= level, and close to it
        assert level * 0.6 <= float((p <= level).mean()) <= level * 1.25, level


def test_group_sums_over_independent_keys_are_binomial_n_times_k() -> None:
    """The same pairs under k keys: no over-dispersion, so Binomial(n*k, gamma) is the null."""
    n, k, groups = 1200, 10, 600
    ctx, tokens = null_pairs(n)
    counts = green_counts_fast(ctx, tokens, random_keys(np.random.default_rng(3), k * groups),
                               GAMMA).reshape(groups, k).sum(axis=1)
    mean, var = n * k * GAMMA, n * k * GAMMA * (1 - GAMMA)
    assert abs(counts.mean() - mean) < 4 * math.sqrt(var / groups)
    assert 0.8 < counts.var() / var < 1.25
    p = 10 ** np.array([log10_upper_tail(n * k, int(c), GAMMA) for c in counts])
    assert float((p <= 0.05).mean()) <= 0.05 * 1.5


def test_family_wise_false_attribution_over_keys_and_looks_stays_below_alpha() -> None:
    """200 sequential runs on unwatermarked text, each against 200 fresh keys and 2 groups,
    4 looks, alpha 0.2 (large, so that the bound is tested rather than trivially met)."""
    alpha, looks, trials = 0.2, 4, 200
    rng = np.random.default_rng(4)
    data = docstring_bytes()
    false = 0
    for _ in range(trials):
        start = int(rng.integers(0, len(data) - 4000))
        pairs = PairSet(WIDTH)
        ids = [f"a{i}" for i in range(200)]
        candidates = build_candidates(ids, [rng.bytes(16)], {"g1": ids[:10], "g2": ids[10:30]})
        evidence = Evidence(candidates, GAMMA)
        test = SequentialTest(alpha, looks, candidates.hypotheses)
        for look in range(looks):
            chunk = data[start + look * 1000:start + (look + 1) * 1000]
            evidence.add(*pairs.add([], chunk))
            if test.look([(1, evidence)], look + 1).attributed:
                false += 1
                break
    assert false / trials <= alpha


def test_distinct_pairs_are_scored_once_and_copies_from_the_prompt_never() -> None:
    pairs = PairSet(WIDTH)
    reply = list(b"abcabcabcabc")
    _, tokens = pairs.add([], reply)
    assert len(tokens) == 3 + 2  # abc bca cab, plus the two pairs with a NO_TOKEN context
    assert len(pairs.add([], reply)[1]) == 0  # the same reply again: nothing new
    prompt = list(b"xyzq")
    copied = pairs.add(prompt, list(b"xyzqr"))
    # the reply repeats the prompt: only pairs absent from the prompt itself are new
    _, all_tokens = reply_pairs(prompt, list(b"xyzqr"), WIDTH)
    assert 0 < len(copied[1]) < len(all_tokens)
    assert int(copied[1][-1]) == ord("r")


def test_the_correction_counts_hypotheses_and_looks_and_refuses_extra_looks() -> None:
    candidates = build_candidates(["a", "b", "c"], [SECRET], {"ab": ["a", "b"]})
    evidence = Evidence(candidates, GAMMA)
    evidence.add(*PairSet(WIDTH).add([], docstring_bytes()[:3000]))
    test = SequentialTest(1e-6, 2, candidates.hypotheses)
    look = test.look([(1, evidence)], 1)
    for h in look.best:
        assert h.log10_p_corrected == pytest.approx(min(0.0, h.log10_p + math.log10(4 * 2)))
    test.look([(1, evidence)], 2)
    with pytest.raises(RuntimeError):
        test.look([(1, evidence)], 3)


def test_groups_must_name_tested_accounts() -> None:
    with pytest.raises(ValueError):
        build_candidates(["a", "b"], [SECRET], {"g": ["a", "z"]})


async def test_a_radioactive_suspect_is_attributed_to_its_account_among_many() -> None:
    ids = [f"acct-{i:04d}" for i in range(2000)]
    owner = ids[777]
    suspect = SimulatedSuspect([derive_key(SECRET, owner)], bias=0.08)
    result = await run_suspect(suspect, prompt_stream(["Return the value of "], 0),
                               build_candidates(ids, [SECRET]), CONFIG,
                               Plan(alpha=1e-6, max_queries=400, queries_per_look=20))
    assert result.verdict == "attributed"
    assert [h.name for h in result.attributed] == [owner]
    assert result.queries < 400 and result.queries == suspect.queries
    assert result.attributed[0].log10_p_corrected < -6


async def test_an_unwatermarked_suspect_is_attributed_to_nobody_and_says_what_it_could_see(
) -> None:
    ids = [f"acct-{i:04d}" for i in range(2000)]
    result = await run_suspect(SimulatedSuspect([], bias=0.0), prompt_stream(["Return "], 0),
                               build_candidates(ids, [SECRET], {"g": ids[:10]}), CONFIG,
                               Plan(alpha=1e-6, max_queries=60, queries_per_look=20))
    assert result.verdict == "not_attributed" and not result.attributed
    assert result.queries == 60 and len(result.looks) == 3
    assert result.detectable_excess is not None and 0 < result.detectable_excess < 0.1


async def test_a_campaign_student_is_attributed_as_its_group() -> None:
    """Ten accounts, each a tenth of the mark: the group's summed evidence is attributed
    while no single member is."""
    ids = [f"acct-{i:04d}" for i in range(1000)]
    members = ids[100:110]
    suspect = SimulatedSuspect([derive_key(SECRET, m) for m in members], bias=0.1, seed=5)
    result = await run_suspect(suspect, prompt_stream(["Return the value of "], 0),
                               build_candidates(ids, [SECRET], {"campaign": members}), CONFIG,
                               Plan(alpha=1e-6, max_queries=200, queries_per_look=20))
    assert [h.name for h in result.attributed] == ["campaign"]
    assert result.best[0].kind == "group"


def test_a_view_scores_each_pair_once_when_its_count_reaches_the_view() -> None:
    pairs = PairSet(WIDTH, (1, 3))
    every, frequent = pairs.add_views([], list(b"abcabcabc"))
    assert len(every[1]) == 5  # two start-of-text pairs, then abc, bca, cab
    assert frequent[1].tolist() == [ord("c")]  # only "ab" -> "c" occurs three times
    every, frequent = pairs.add_views([], list(b"zbcab"))
    assert ord("a") in frequent[1].tolist()  # "bc" -> "a" reached three
    assert len(pairs.add_views([], list(b"abcabcabc"))[1][1]) == 0  # never twice


def test_the_frequent_pair_view_is_uniform_under_the_null_too() -> None:
    """Selecting pairs by how often the text repeats them looks at no key: still Binomial."""
    pairs = PairSet(WIDTH, (1, 4))
    _, (ctx, tokens) = pairs.add_views([], docstring_bytes())
    assert len(tokens) > 1000
    keys = random_keys(np.random.default_rng(6), 4000)
    counts = green_counts_fast(ctx, tokens, keys, GAMMA)
    p = 10 ** log10_upper_tails(len(tokens), counts, GAMMA)
    for level in (0.01, 0.05, 0.2):
        assert level * 0.6 <= float((p <= level).mean()) <= level * 1.25, level
