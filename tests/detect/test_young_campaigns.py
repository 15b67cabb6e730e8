"""Nothing invisible: accounts are sketched from their first request, and a cluster of accounts
too young to be scored is judged on their requests taken together. Campaigns need suspicious
behaviour: a shared template and a shared office network are not enough."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

from gateway.detect import campaign, features, window
from gateway.detect.redis_window_store import _SKETCH, _decode_sketch, _encode_sketch
from gateway.detect.runtime import DetectionEngine, DetectionEngineConfig
from gateway.detect.scoring import Artifact
from gateway.detect.window_store import MemoryWindowStore, Sketch
from gateway.metrics import Metrics
from tests.detect.conftest import record
from tests.detect.test_runtime import Recorder

F32 = npt.NDArray[np.float32]
TEMPLATE = ("You are a meticulous tutor. Solve the problem below and give the full reasoning "
            "before the final answer.\n\nProblem: {q}")


class ConstantScorer:
    """A stand-in model: every window gets the same score (the test is about the engine)."""

    name = "constant"

    def __init__(self, score: float) -> None:
        self.value = score
        self.calls = 0

    def score(self, seq: F32, mask: F32, stats: F32) -> F32:
        self.calls += 1
        return np.full(len(seq), self.value, dtype=np.float32)


def _engine(tiny_artifact: Path, score: float) -> tuple[DetectionEngine, MemoryWindowStore]:
    artifact = replace(Artifact.load(tiny_artifact), threshold=0.9)
    store = MemoryWindowStore(artifact.window)
    config = DetectionEngineConfig(window=artifact.window, min_requests=8, score_every=4,
                          min_score_interval_s=0.0, campaign_min_accounts=3)
    return DetectionEngine(config, ConstantScorer(score), artifact, store, Recorder(),
                           metrics=Metrics(CollectorRegistry())), store


def _sybils(engine: DetectionEngine, accounts: int, requests: int) -> list[str]:
    """Fresh accounts on distinct /24s, each under the first scoring, one shared template."""
    names = [f"sybil{k}" for k in range(accounts)]
    for i in range(requests):
        for k, name in enumerate(names):
            rec, prompt = record(TEMPLATE.format(q=f"question {k} {i} about primes"),
                                 account=name, rid=f"{name}-{i}", ts=1e9 + 60 * i + k,
                                 client_addr=f"10.{k}.{i % 3}.7")
            engine.observe(rec, prompt)
    return names


async def test_an_accounts_first_request_is_sketched(tiny_artifact: Path) -> None:
    engine, store = _engine(tiny_artifact, 0.99)
    engine.observe(*record(TEMPLATE.format(q="2+2"), account="new", rid="r0"))
    await engine.cycle()
    sketch = (await store.sketches(0.0))["new"]
    assert sketch.young and sketch.score == 0.0 and sketch.strength > 0


async def test_young_sybils_on_distinct_networks_are_one_campaign_when_their_requests_together_score_high(  # noqa: E501
        tiny_artifact: Path) -> None:
    engine, _ = _engine(tiny_artifact, 0.99)
    names = _sybils(engine, accounts=10, requests=3)
    while engine.backlog:
        await engine.cycle()
    found = await engine.sweep()
    assert [c.accounts for c in found] == [sorted(names)]
    assert any("taken together" in r for r in found[0].reasons)


async def test_young_accounts_whose_requests_together_look_benign_are_no_campaign(
        tiny_artifact: Path) -> None:
    engine, _ = _engine(tiny_artifact, 0.05)
    _sybils(engine, accounts=10, requests=3)
    while engine.backlog:
        await engine.cycle()
    assert await engine.sweep() == []


def _org(score: float) -> dict[str, Sketch]:
    signature = np.arange(16, dtype=np.uint32) * 7919
    return {f"team{i}": Sketch(signature, 0.9, 42, score, 1.0) for i in range(5)}


def test_org_accounts_sharing_a_template_and_a_network_with_benign_behaviour_form_no_campaign(
        ) -> None:
    assert campaign.find_campaigns(_org(0.01)) == []
    found = campaign.find_campaigns(_org(0.2))
    assert len(found) == 1 and any("same network" in r for r in found[0].reasons)


def test_a_young_sketch_survives_the_shared_store_and_old_sketches_read_as_scored() -> None:
    sketch = Sketch(np.arange(16, dtype=np.uint32), 0.5, 7, 0.0, 12.0, young=True)
    back = _decode_sketch(_encode_sketch(sketch))
    assert back.young and np.array_equal(back.signature, sketch.signature)
    old = _encode_sketch(replace(sketch, young=False))[:_SKETCH.size]
    assert not _decode_sketch(old).young


def test_a_young_accounts_sketch_is_the_one_its_window_would_give() -> None:
    """The cheap sketch of young accounts and the scored window agree, so an account's
    signature does not jump when it becomes old enough to score."""
    items = [features.extract(*record(TEMPLATE.format(q=f"q{i % 3}"), rid=f"r{i}", ts=1e9 + i,
                                      client_addr=f"10.0.{i % 2}.1")) for i in range(7)]
    signature, strength, network = window.sketch(items)
    built = window.build(items, 64)
    assert np.array_equal(signature, built.signature)
    assert strength == pytest.approx(built.signature_strength)
    assert network == built.network


async def test_young_accounts_sharing_a_template_but_not_a_script_form_no_campaign(
        tiny_artifact: Path) -> None:
    """Users of one product (one system prompt) each at their own pace are not judged as one
    account, however their requests would score together."""
    engine, _ = _engine(tiny_artifact, 0.99)
    names = [f"user{k}" for k in range(10)]
    for i in range(3):
        for k, name in enumerate(names):
            rec, prompt = record(TEMPLATE.format(q=f"question {k} {i} about primes"),
                                 account=name, rid=f"{name}-{i}",
                                 ts=1e9 + (30.0 * 2 ** k) * i + k,
                                 client_addr=f"10.{k}.{i % 3}.7")
            engine.observe(rec, prompt)
    while engine.backlog:
        await engine.cycle()
    assert await engine.sweep() == []
