"""Per-account prompt coverage (:mod:`gateway.detect.coverage`) and the risk policy it feeds:
re-asking a bounded set raises no risk; any fresh request among the repeats does."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from gateway.detect import coverage, features, risk, window
from gateway.detect.runtime import DetectionEngine, DetectionEngineConfig
from gateway.detect.scoring import Artifact, load_scorer
from gateway.detect.window_store import MemoryWindowStore
from gateway.metrics import Metrics
from tests.detect.conftest import record
from tests.detect.test_runtime import Recorder

DAY = 86400.0


def _fp(prompt: str, **fields: object) -> int:
    rec, text = record(prompt, **fields)
    return coverage.fingerprint(rec, coverage.digest(text))


def test_fingerprint_is_the_whole_request() -> None:
    assert _fp("what is 2+2?") == _fp("what is 2+2?") != 0
    assert _fp("what is 2+2?") != _fp("what is 2+3?")
    assert _fp("q", temperature=0.6) != _fp("q", temperature=0.7)
    assert _fp("q", max_tokens=10) != _fp("q", max_tokens=11)
    assert _fp("q", n=1) != _fp("q", n=4)
    # a logit-bias sweep over one prompt is new every time: the biased tokens are not recorded
    assert _fp("q", logit_bias_size=3) == 0
    # text the features never read (the middle of a long prompt) still makes a request new
    head, tail = "h" * 1500, "t" * 1500
    one, two = f"{head} first question {tail}", f"{head} second question {tail}"
    assert features.bounded(one) == features.bounded(two)
    assert _fp(one) != _fp(two)


def test_cover_tells_repeats_from_new_requests() -> None:
    novel, state = coverage.cover(b"", [_fp(f"q{i}") for i in range(40)])
    assert novel and coverage.count(state) == 40
    novel, again = coverage.cover(state, [_fp(f"q{i}") for i in (3, 7, 11, 39)])
    assert not novel and again == state  # a re-run of the set: nothing new, nothing stored
    novel, more = coverage.cover(state, [_fp("q3"), _fp("fresh"), _fp("q7")])
    assert novel and coverage.count(more) == 41  # one fresh request makes the scoring new


def test_cover_fails_closed() -> None:
    _, state = coverage.cover(b"", [_fp("a"), _fp("b")])
    assert coverage.cover(state, [])[0]  # nothing newly covered: no evidence of a repeat
    assert coverage.cover(state, [_fp("a"), 0])[0]  # an unknown request is new
    assert coverage.cover(b"garbage", [_fp("a")])[0]  # an unreadable state knows nothing
    assert len(state) == coverage.SIZE


def test_cover_stops_discounting_at_capacity() -> None:
    """An account past the capacity has shown growing coverage: its repeats are not discounted
    (and a full filter cannot turn fresh requests into false repeats)."""
    prompts = [_fp(f"question {i}") for i in range(coverage.CAPACITY + 10)]
    state = b""
    for start in range(0, len(prompts), 4):
        _, state = coverage.cover(state, prompts[start:start + 4])
    held = coverage.count(state)  # a false repeat or two below capacity, every one above
    assert coverage.CAPACITY < held <= len(prompts)
    novel, again = coverage.cover(state, prompts[:4])
    assert novel and again[2:] == state[2:]  # the filter no longer changes
    assert coverage.count(again) == held + 4  # every request counts now: the count errs high


def test_the_count_saturates_instead_of_wrapping() -> None:
    _, state = coverage.cover(b"", [_fp(f"q {i}") for i in range(coverage.CAPACITY + 10)])
    assert coverage.count(state) > coverage.CAPACITY
    for _ in range(70):
        _, state = coverage.cover(state, [_fp("q 0")] * 1000)
    assert coverage.count(state) == coverage.MAX_COUNT


def test_false_repeats_are_rare_at_capacity() -> None:
    _, state = coverage.cover(b"", [_fp(f"seen {i}") for i in range(coverage.CAPACITY - 1)])
    judged_seen = sum(not coverage.cover(state, [_fp(f"fresh {i}")])[0] for i in range(2000))
    assert judged_seen < 60  # ~1% of fresh requests; a scoring needs all of its new ones


def test_a_repeat_scoring_does_not_raise_risk() -> None:
    state = risk.RiskState()
    state = risk.update(state, 0.999, 100.0, 3 * DAY)
    held = risk.update(state, 0.9999, 200.0, 3 * DAY, novel=False, coverage=b"x")
    assert held.risk <= state.risk and held.coverage == b"x"
    assert held.peak_score == 0.9999  # the score is still recorded
    lower = risk.update(state, 0.1, 200.0, 3 * DAY, novel=False)
    assert lower.risk < state.risk  # a benign-looking repeat still lowers it
    rises = risk.update(state, 0.9999, 200.0, 3 * DAY)
    assert rises.risk > state.risk and rises.coverage == state.coverage


def test_features_carry_the_fingerprint_through_the_store_encoding() -> None:
    rec, prompt = record("a question?")
    item = features.extract(rec, prompt)
    assert item.fingerprint == coverage.fingerprint(rec, coverage.digest(prompt))
    assert window.decode(window.encode(item)).fingerprint == item.fingerprint
    legacy = window.encode(replace(item, fingerprint=0))[:-8]  # written before fingerprints
    old = window.decode(legacy)
    assert old.fingerprint == 0 and old.request_id == item.request_id
    assert np.array_equal(old.minhash, item.minhash)
    # a prompt already cut by the caller keeps the fingerprint of the whole prompt
    long = "x " * 3000
    rec, _ = record(long)
    cut = features.extract_batch([(rec, features.bounded(long))], [coverage.digest(long)])[0]
    assert cut is not None and cut.fingerprint == _fp(long)


async def test_engine_rerun_of_a_question_set_raises_no_risk(tiny_artifact: Path) -> None:
    """The engine scores a re-run like any window, but its risk does not rise; a re-run with
    one fresh question in every scoring rises as the first run did."""
    artifact = Artifact.load(tiny_artifact)
    config = DetectionEngineConfig(window=artifact.window, min_requests=8, score_every=4,
                                   max_batch=64, max_wait_s=0.001, min_score_interval_s=0.0)
    engine = DetectionEngine(config, load_scorer(artifact, "cpu"), artifact,
                             MemoryWindowStore(artifact.window), Recorder(),
                             metrics=Metrics(CollectorRegistry()))
    store = engine.store
    assert isinstance(store, MemoryWindowStore)
    questions = [f"Question {i}: what is {i} times {i + 3}? Think step by step." for i in range(16)]
    ts = 1e9
    for run, fresh in ((0, False), (1, False), (2, True)):
        for i, q in enumerate(questions):
            ts += 1.0
            prompt = f"{q} (extra {run}-{i})" if fresh and i % 4 == 0 else q
            engine.observe(*record(prompt, account="harness", rid=f"{run}-{i}", ts=ts,
                                   temperature=0.6))
            await engine.cycle()
        state = (await store.exchange([], ["harness"])).risks["harness"]
        if run == 0:
            first = state
        elif run == 1:
            assert state.risk <= first.risk
            assert coverage.count(state.coverage) == len(questions)
        else:
            assert coverage.count(state.coverage) == len(questions) + 4


def test_unknown_requests_are_counted_every_time() -> None:
    """A logit-bias sweep over one prompt (no fingerprint) spends a declared allowance as fast
    as fresh prompts would: the count errs high, never low."""
    state = b""
    for _ in range(10):
        novel, state = coverage.cover(state, [0, 0, 0, 0])
        assert novel
    assert coverage.count(state) == 40
