"""The engine: micro-batching, never blocking observe, load shedding, bounded queues."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.detect.campaign import Campaign
from gateway.detect.offline import simulate
from gateway.detect.runtime import DetectionEngine, DetectionEngineConfig, Scored
from gateway.detect.scoring import Artifact, load_scorer
from gateway.detect.window_store import MemoryWindowStore
from gateway.metrics import Metrics
from tests.detect.conftest import record


class Recorder:
    def __init__(self) -> None:
        self.scored: list[Scored] = []
        self.campaigns: list[Campaign] = []

    async def on_scored(self, results: Sequence[Scored]) -> None:
        self.scored.extend(results)

    async def on_campaigns(self, found: Sequence[Campaign]) -> None:
        self.campaigns.extend(found)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def _engine(artifact_path: Path, **overrides: object) -> tuple[DetectionEngine, Recorder]:
    artifact = Artifact.load(artifact_path)
    values = {"window": artifact.window, "min_requests": 8, "score_every": 4, "max_batch": 64,
              "max_wait_s": 0.001, "min_score_interval_s": 0.0, "campaign_interval_s": 3600.0}
    values.update(overrides)
    policy = Recorder()
    engine = DetectionEngine(DetectionEngineConfig(**values),  # type: ignore[arg-type]
                             load_scorer(artifact, "cpu"), artifact,
                             MemoryWindowStore(artifact.window), policy,
                             metrics=Metrics(CollectorRegistry()))
    return engine, policy


def _sample(engine: DetectionEngine, name: str, **labels: str) -> float:
    """A sample of the engine's own metrics (0 when it has none yet)."""
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_observed_requests_are_scored_in_batches(tiny_artifact: Path) -> None:
    engine, policy = _engine(tiny_artifact)
    await engine.start()
    try:
        for account in ("a", "b"):
            for i in range(20):
                engine.observe(*record(f"prompt {i} for {account}", account=account,
                                       rid=f"{account}{i}", ts=1e9 + i))
        await engine.drain()
    finally:
        await engine.stop()
    by_account = {r.account for r in policy.scored}
    assert by_account == {"a", "b"}
    assert all(0.0 <= r.score <= 1.0 for r in policy.scored)
    last = [r for r in policy.scored if r.account == "a"][-1]
    assert last.request_ids[-1] == "a19" and len(last.request_ids) == 20
    assert last.state.updated == pytest.approx(1e9 + 19)


async def test_rate_limited_requests_are_not_observed(tiny_artifact: Path) -> None:
    """A 429 got no answer: our own limits must not fill a benign batch's window."""
    engine, _ = _engine(tiny_artifact)
    refused, prompt = record("x", rid="refused")
    refused.status_code = 429
    engine.observe(refused, prompt)
    assert engine.backlog == 0
    engine.observe(*record("x", rid="answered"))
    assert engine.backlog == 1


async def test_observe_ignores_anonymous_and_never_raises(tiny_artifact: Path) -> None:
    engine, _ = _engine(tiny_artifact)
    rec, prompt = record("x")
    rec.account_id = None
    engine.observe(rec, prompt)
    assert engine.backlog == 0
    bad, _ = record("x")
    bad.created_at = None  # type: ignore[assignment]
    before = _sample(engine, "gateway_detect_errors_total", stage="features")
    engine.observe(bad, "x")  # queued: extraction happens in the batch, off the reply path
    engine.observe(*record("fine", rid="ok"))
    await engine.cycle()
    assert _sample(engine, "gateway_detect_errors_total", stage="features") == before + 1
    assert engine.backlog == 0


async def test_overload_sheds_scorings_not_requests(tiny_artifact: Path) -> None:
    engine, policy = _engine(tiny_artifact, max_batch=4)
    shed_before = _sample(engine, "gateway_detect_shed_total")
    for account in range(40):
        for i in range(8):
            engine.observe(*record(f"p{i}", account=f"acct{account}", rid=f"{account}-{i}"))
    await engine.cycle()  # 32 items drained: 8 accounts due, backlog large -> stride grows
    assert _sample(engine, "gateway_detect_shed_total") > shed_before
    assert len(policy.scored) <= 4
    assert engine.backlog == 40 * 8 - 32


async def test_queue_is_bounded(tiny_artifact: Path) -> None:
    engine, _ = _engine(tiny_artifact, queue_max=10)
    dropped = _sample(engine, "gateway_detect_dropped_total")
    for i in range(15):
        engine.observe(*record(f"p{i}", rid=str(i)))
    assert engine.backlog == 10
    assert _sample(engine, "gateway_detect_dropped_total") == dropped + 5


async def test_campaign_sweep_finds_templated_cluster(tiny_artifact: Path) -> None:
    engine, policy = _engine(tiny_artifact, campaign_min_score=0.0)
    sessions = simulate.generate(4, "heldout", 8, (40, 40), ("campaign",))
    for s in sessions:
        for i in range(len(s.requests)):
            engine.observe(*simulate.to_record(s, i))
    while engine.backlog:
        await engine.cycle()
    found = await engine.sweep()
    assert found and set(found[0].accounts) == {s.account for s in sessions}
    assert policy.campaigns == found
