"""Clusters by behaviour, not only by template: fresh accounts that appear together and behave
alike (parameters, sizes, cues, pacing) are judged as one operation, even when every prompt is
paraphrased and every account has a network of its own. Behaving alike is not enough alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway.detect import behaviour, campaign, features
from gateway.detect.features import F32
from gateway.detect.redis_window_store import _decode_sketch, _encode_sketch
from gateway.detect.runtime import DetectionEngine, DetectionEngineConfig
from gateway.detect.scoring import Artifact, Scorer
from gateway.detect.window_store import MemoryWindowStore, Sketch
from gateway.metrics import Metrics
from tests.detect.conftest import record
from tests.detect.test_runtime import Recorder
from tests.detect.test_young_campaigns import ConstantScorer

FRAMES = ("Problem: ", "Quick one: ", "From my homework: ", "Can you help? ", "")
CUES = ("Lay out each intermediate stage on its own numbered line.",
        "Write down every calculation and the consideration behind it.",
        "Narrate the full path from the question to the answer.")


def _engine(tiny_artifact: Path, score: float, scorer: Scorer | None = None
            ) -> DetectionEngine:
    artifact = replace(Artifact.load(tiny_artifact), threshold=0.9)
    config = DetectionEngineConfig(window=artifact.window, min_requests=8, score_every=4,
                          min_score_interval_s=0.0, cohort_min_accounts=5)
    return DetectionEngine(config, scorer or ConstantScorer(score), artifact,
                           MemoryWindowStore(artifact.window), Recorder(),
                           metrics=Metrics(CollectorRegistry()))


def _paraphrased_sybils(engine: DetectionEngine, accounts: int = 10, requests: int = 6,
                        start: float = 1e9, born_every_s: float = 20.0, pause_s: float = 300.0,
                        **params: Any) -> list[str]:
    """One script's accounts: every prompt worded anew, a /24 each, same parameters and pace."""
    names = [f"s{start:.0f}-{k}" for k in range(accounts)]
    for i in range(requests):
        for k, name in enumerate(names):
            prompt = f"{FRAMES[(i + k) % 5]}{_question(k * requests + i)}\n\n{CUES[(i * k) % 3]}"
            rec, text = record(prompt, account=name, rid=f"{name}-{i}",
                               ts=start + born_every_s * k + pause_s * i,
                               client_addr=f"10.{k}.{i % 5}.{9 + k}", max_tokens=4096,
                               temperature=0.8, completion_tokens=900, prompt_tokens=40,
                               **params)
            engine.observe(rec, text)
    return names


WORDS = ("river", "prime", "ledger", "orbit", "violin", "glacier", "tariff", "enzyme",
         "sonnet", "harbor", "quartz", "census", "falcon", "mortgage", "voltage", "pigment",
         "treaty", "canyon", "protein", "lantern", "algebra", "compass", "monsoon", "syntax")


def _question(seed: int) -> str:
    """A question of its own: no word 3-shingle in common with the others (no template)."""
    rng = np.random.default_rng(seed)
    words = rng.choice(WORDS, size=9, replace=False)
    return (f"How does the {words[0]} relate to {' and '.join(words[1:4])} given "
            f"{' '.join(words[4:])}?")


async def _cohorts(engine: DetectionEngine) -> list[campaign.Campaign]:
    """Campaigns found by behaviour (the shared cue lines may also make a template cluster)."""
    while engine.backlog:
        await engine.cycle()
    return [c for c in await engine.sweep() if any("behave alike" in r for r in c.reasons)]


async def test_paraphrased_sybils_on_distinct_networks_are_one_campaign_by_behaviour(
        tiny_artifact: Path) -> None:
    engine = _engine(tiny_artifact, 0.99)
    names = _paraphrased_sybils(engine)
    cohort = await _cohorts(engine)
    assert [c.accounts for c in cohort] == [sorted(names)]
    assert any("taken together" in r for r in cohort[0].reasons)


async def test_alike_accounts_whose_requests_together_look_benign_are_no_campaign(
        tiny_artifact: Path) -> None:
    engine = _engine(tiny_artifact, 0.05)
    _paraphrased_sybils(engine)
    assert await _cohorts(engine) == []


class MergeScorer:
    """A stand-in model that flags only long windows: an account's own window of a dozen
    requests scores 0, the merge of several accounts' requests 0.99 (as a model may read many
    people's unrelated topics in one stream)."""

    name = "merge"

    def score(self, seq: F32, mask: F32, stats: F32) -> F32:
        return np.where(mask.sum(axis=1) >= 40, 0.99, 0.0).astype(np.float32)


async def test_accounts_their_own_windows_cleared_are_not_merged_into_a_campaign(
        tiny_artifact: Path) -> None:
    """Old enough to be scored, and scored benign: the accounts' own windows are the evidence,
    not a window merged from them that none of them sent."""
    engine = _engine(tiny_artifact, 0.0, MergeScorer())
    _paraphrased_sybils(engine, accounts=6, requests=12)
    assert await _cohorts(engine) == []

    young = _engine(tiny_artifact, 0.0, MergeScorer())
    names = _paraphrased_sybils(young, accounts=10, requests=6)
    assert [c.accounts for c in await _cohorts(young)] == [sorted(names)]


async def test_accounts_that_did_not_appear_together_are_no_cohort(tiny_artifact: Path) -> None:
    engine = _engine(tiny_artifact, 0.99)
    _paraphrased_sybils(engine, born_every_s=2 * 3600.0)
    assert await _cohorts(engine) == []


async def test_accounts_with_their_own_parameters_are_no_cohort(tiny_artifact: Path) -> None:
    engine = _engine(tiny_artifact, 0.99)
    for k in range(6):
        _paraphrased_sybils(engine, accounts=1, start=1e9 + k, n=k + 1)
    assert await _cohorts(engine) == []


async def test_accounts_the_cohort_left_out_are_listed_when_they_harvest_together(
        tiny_artifact: Path) -> None:
    """A star is alike to its seed; one script's accounts vary around it. Those alike to a
    member but not to the seed, born with the cohort, join its campaign when their own requests
    taken together score as extraction; one such account alone is too few to judge."""
    engine = _engine(tiny_artifact, 0.99)
    seed = _paraphrased_sybils(engine, accounts=5, pause_s=300.0)
    near = _paraphrased_sybils(engine, accounts=3, start=1e9 + 5, pause_s=450.0)
    left_out = _paraphrased_sybils(engine, accounts=3, start=1e9 + 7, pause_s=667.0)
    found = await _cohorts(engine)
    assert [sorted(c.accounts) for c in found] == [sorted([*seed, *near, *left_out])]
    assert any("more accounts that appeared with them" in r for r in found[0].reasons)

    alone = _engine(tiny_artifact, 0.99)
    seed = _paraphrased_sybils(alone, accounts=5, pause_s=300.0)
    near = _paraphrased_sybils(alone, accounts=3, start=1e9 + 5, pause_s=450.0)
    _paraphrased_sybils(alone, accounts=1, start=1e9 + 7, pause_s=667.0)
    assert [sorted(c.accounts) for c in await _cohorts(alone)] == [sorted([*seed, *near])]


def test_stragglers_are_one_hop_from_a_member_with_its_parameters_and_born_with_it() -> None:
    base = behaviour.profile(_items(6, 60.0))
    gap = behaviour.NAMES.index("gap_log")

    def paced(pause_log: float, **changes: float) -> np.ndarray:
        out = base.copy()
        out[gap] = pause_log
        for name, value in changes.items():
            out[behaviour.NAMES.index(name)] = value
        return out

    sketches = {"seed": _sketch(paced(1.0), 1e9), "member": _sketch(paced(1.4), 1e9 + 10),
                "twin": _sketch(paced(1.0), 1e9),  # born with the seed, to the second
                "straggler": _sketch(paced(1.8), 1e9 + 20),
                "chained": _sketch(paced(2.2), 1e9 + 30),
                "late": _sketch(paced(1.8), 1e9 + 3 * 3600.0),
                "taken": _sketch(paced(1.8), 1e9 + 40),
                "other_params": _sketch(paced(1.8, temperature=0.1), 1e9 + 50)}
    assert campaign.stragglers(["seed", "twin", "member"], sketches, {"taken"}, 3600.0) \
        == ["straggler"]
    assert campaign.stragglers([], sketches, set(), 3600.0) == []


def _items(n: int, gap: float, **fields: Any) -> list[features.RequestFeatures]:
    return [features.extract(*record(f"question {i} about primes", rid=f"r{i}",
                                     ts=1e9 + gap * i, **fields)) for i in range(n)]


def test_pacing_and_sizes_tell_accounts_apart() -> None:
    base = behaviour.profile(_items(6, 60.0, max_tokens=512))
    assert behaviour.alike(base, behaviour.profile(_items(6, 70.0, max_tokens=512)))
    assert not behaviour.alike(base, behaviour.profile(_items(6, 600.0, max_tokens=512)))
    assert not behaviour.alike(base, behaviour.profile(_items(6, 60.0, max_tokens=64)))
    assert not behaviour.alike(base, behaviour.profile(
        _items(6, 60.0, max_tokens=512, completion_tokens=3000)))


def test_one_request_is_alike_nothing() -> None:
    """No pacing yet: a crowd of one-request accounts is no cohort."""
    one = behaviour.profile(_items(1, 60.0))
    assert np.isnan(one).any() and not behaviour.alike(one, one)


def _sketch(profile: np.ndarray, born: float) -> Sketch:
    return Sketch(np.zeros(16, np.uint32), 0.0, 0, 0.0, born, behaviour=profile, born=born)


def test_cohorts_are_bounded_per_account_and_never_chained_through_time() -> None:
    profile = behaviour.profile(_items(4, 30.0))
    together = {f"a{i:02d}": _sketch(profile, 1e9 + i) for i in range(50)}
    assert campaign.cohorts(together, min_accounts=5) == [sorted(together)]
    # Each seed looks at its next four peers at most: ten cohorts of five.
    assert [len(c) for c in campaign.cohorts(together, min_accounts=5, max_neighbours=4)] \
        == [5] * 10
    assert campaign.cohorts(together, min_accounts=51) == []
    # Alike people signing up every twenty minutes all day: each is alike to the one before,
    # but no five of them appeared within an hour of one another.
    steady = {f"p{i:02d}": _sketch(profile, 1e9 + 1200.0 * i) for i in range(72)}
    assert campaign.cohorts(steady, min_accounts=5, birth_span_s=3600.0) == []


def test_a_behaviour_profile_survives_the_shared_store_and_old_sketches_have_none() -> None:
    profile = behaviour.profile(_items(4, 30.0))
    sketch = _sketch(profile, 123.5)
    back = _decode_sketch(_encode_sketch(sketch))
    assert back.born == pytest.approx(123.5)
    assert back.behaviour is not None and np.allclose(back.behaviour, profile)
    old = _encode_sketch(replace(sketch, behaviour=None))
    assert _decode_sketch(old).behaviour is None


def test_profiles_of_many_windows_are_each_windows_profile() -> None:
    windows = [_items(1, 60.0), _items(3, 30.0, max_tokens=64), _items(7, 600.0), []]
    many = behaviour.profiles(windows)
    for row, items in zip(many, windows, strict=True):
        one = behaviour.profile(items)
        assert np.allclose(row, one, equal_nan=True)


def test_a_logit_bias_sweep_is_one_script_whatever_the_size_of_each_bias() -> None:
    """Logit recovery biases a different number of tokens in every request: its accounts share
    the use of ``logit_bias``, not one size, and are still alike; an account without any bias
    is never alike to them."""
    probe: dict[str, Any] = {"max_tokens": 1, "logprobs": True, "top_logprobs": 5}
    few = behaviour.profile(_items(6, 60.0, logit_bias_size=3, **probe))
    many = behaviour.profile(_items(6, 60.0, logit_bias_size=12, **probe))
    none = behaviour.profile(_items(6, 60.0, logit_bias_size=0, **probe))
    assert behaviour.params_key(few) == behaviour.params_key(many)
    assert behaviour.params_key(few) != behaviour.params_key(none)
    assert behaviour.alike(few, many)
    assert not behaviour.alike(few, none) and not behaviour.alike(none, few)


def test_slow_accounts_appear_together_in_their_own_time() -> None:
    """Low-and-slow accounts that each send a request every four hours, started 40 minutes
    apart, appeared together; the same births for accounts pausing half a minute did not."""
    slow = behaviour.profile(_items(4, 4 * 3600.0))
    births = {f"s{i:02d}": 1e9 + 2400.0 * i for i in range(8)}
    staggered = {a: _sketch(slow, born) for a, born in births.items()}
    assert campaign.cohorts(staggered, min_accounts=5, birth_span_s=3600.0) == [sorted(births)]
    fast = behaviour.profile(_items(4, 30.0))
    assert campaign.cohorts({a: _sketch(fast, born) for a, born in births.items()},
                            min_accounts=5, birth_span_s=3600.0) == []


async def test_standing_cohorts_do_not_starve_a_new_one(tiny_artifact: Path) -> None:
    """The merged-score budget pays for new scores only: a cohort unchanged since the last
    sweep is judged from the cache, so a larger standing cohort (people on one SDK's defaults,
    or decoys an attacker keeps alive) cannot take the whole budget every sweep."""
    artifact = replace(Artifact.load(tiny_artifact), threshold=0.9)
    config = DetectionEngineConfig(window=artifact.window, min_requests=8, score_every=4,
                                   min_score_interval_s=0.0, cohort_min_accounts=5,
                                   campaign_max_merged=1)
    engine = DetectionEngine(config, ConstantScorer(0.99), artifact,
                             MemoryWindowStore(artifact.window), Recorder(),
                             metrics=Metrics(CollectorRegistry()))
    larger = _paraphrased_sybils(engine, accounts=8)
    smaller = _paraphrased_sybils(engine, accounts=6, start=1e9 + 7, n=2)
    first = [c.accounts for c in await _cohorts(engine)]
    assert first == [sorted(larger)]  # one merged score per sweep: the largest first
    second = [c.accounts for c in await _cohorts(engine)]
    assert sorted(second) == sorted([sorted(larger), sorted(smaller)])
