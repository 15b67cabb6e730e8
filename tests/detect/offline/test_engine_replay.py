"""The replay drives the production engine: its schedule, windows, scores and campaigns."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gateway.detect import features, risk, window
from gateway.detect.offline.engine_replay import Replay, engine_config, replay
from gateway.detect.offline.real_traffic import Request, to_record
from gateway.detect.offline.simulate import EPOCH, Session
from gateway.detect.scoring import DEFAULT_ARTIFACT, F32, Artifact, load_scorer
from gateway.domain.workloads import Workload


class ConstantScorer:
    name = "constant"

    def __init__(self, value: float) -> None:
        self.value = value

    def score(self, seq: F32, mask: F32, stats: F32) -> F32:
        return np.full(len(seq), self.value, dtype=np.float32)


@pytest.fixture(scope="module")
def artifact() -> Artifact:
    return Artifact.load(DEFAULT_ARTIFACT)


def _session(account: str, n: int, *, addr: str = "203.0.113.9", gap: float = 30.0,
             template: str = "Summarise ticket {i} for the weekly report, please.") -> Session:
    reqs = [Request(EPOCH + i * gap, template.format(i=i), 200, 512, 0.2, natural_tokens=200)
            for i in range(n)]
    return Session(account, "test", 0, addr, list(reqs))


async def _run(sessions: list[Session], artifact: Artifact, value: float = 0.9) -> Replay:
    return await replay(sessions, ConstantScorer(value), artifact, lambda a: "all")


async def test_accounts_are_first_scored_at_min_requests_then_every_score_every(
        artifact: Artifact) -> None:
    """... and once more when they fall quiet with requests no scoring has read."""
    result = await _run([_session("a", 30), _session("b", artifact.min_requests - 1)], artifact)
    positions = [p.position for p in result.trajectories["a"]]
    assert 30 % artifact.score_every != 0
    assert positions == [*range(artifact.min_requests, 31, artifact.score_every), 30]
    assert "b" not in result.trajectories  # below the first scoring: never seen by the model


async def test_a_slow_account_is_scored_after_each_quiet_spell_not_after_each_request(
        artifact: Artifact) -> None:
    """Requests further apart than ``tail_quiet_s``: each pause is a quiet spell, so every
    request is read by the model once the account falls silent; a request every minute is
    scored on the usual schedule."""
    slow = await _run([_session("a", 12, gap=2 * engine_config(artifact).tail_quiet_s)],
                      artifact)
    assert [p.position for p in slow.trajectories["a"]] == list(range(artifact.min_requests, 13))
    brisk = await _run([_session("a", 12, gap=60.0)], artifact)
    assert [p.position for p in brisk.trajectories["a"]] == [artifact.min_requests, 12]


async def test_risk_follows_the_runtime_policy(artifact: Artifact) -> None:
    result = await _run([_session("a", 24)], artifact, value=0.9)
    state = risk.RiskState()
    for point in result.trajectories["a"]:
        state = risk.update(state, 0.9, point.ts, 3 * 86400.0)
        assert point.risk == pytest.approx(state.risk)
    assert result.flagged_at("a", 0.8) is not None
    assert result.flagged_at("a", 0.95) is None


async def test_a_declared_workload_withholds_verdicts_until_its_allowance_is_spent(
        artifact: Artifact) -> None:
    fresh, rerun = _session("fresh", 40), _session("rerun", 40)
    rerun.requests[:] = [replace(r, prompt=f"Benchmark question {i % 10}")
                         for i, r in enumerate(rerun.requests)]
    result = await _run([fresh, rerun], artifact, value=0.99)
    allowance = Workload("evaluation", 20)
    undeclared = result.flagged_at("fresh", 0.9)
    declared = result.flagged_at("fresh", 0.9, allowance)
    assert undeclared is not None and declared is not None
    assert undeclared.distinct <= 20 < declared.distinct  # the first verdict past the allowance
    assert declared.position <= 20 + artifact.score_every  # harvested at most one stride more
    assert result.flagged_at("rerun", 0.9) is not None
    assert result.flagged_at("rerun", 0.9, allowance) is None  # ten questions, rerun: free
    assert result.peak("rerun", allowance) == 0.0


async def test_scores_equal_the_shipped_model_on_the_same_windows(artifact: Artifact) -> None:
    session = _session("a", 20, template="Explain step by step how item {i} works.")
    result = await replay([session], load_scorer(artifact, "cpu"), artifact, lambda a: "all")
    items = [features.extract(*to_record(session, i)) for i in range(20)]
    scorer = load_scorer(artifact, "cpu")
    for point in result.trajectories["a"]:
        built = window.build(items[:point.position], artifact.window)
        expected = scorer.score(*window.stack([built]))[0]
        assert point.score == pytest.approx(float(expected), abs=1e-6)


async def test_accounts_sharing_a_template_and_network_become_a_campaign_when_suspicious(
        artifact: Artifact) -> None:
    scored = [_session(f"s{i}", 12) for i in range(3)]
    result = await _run(scored, artifact, value=0.9)
    assert set(result.campaign_at) == {"s0", "s1", "s2"}


async def test_a_shared_template_and_network_with_benign_behaviour_is_no_campaign(
        artifact: Artifact) -> None:
    """An office behind one NAT whose teams use one internal template."""
    result = await _run([_session(f"s{i}", 12) for i in range(3)], artifact, value=0.0)
    assert result.campaign_at == {} and result.campaigns == []


async def test_accounts_too_young_to_score_join_a_campaign_on_their_requests_together(
        artifact: Artifact) -> None:
    young = [_session(f"s{i}", artifact.min_requests - 1) for i in range(5)]
    result = await _run(young, artifact, value=1.0)
    assert set(result.campaign_at) == {f"s{i}" for i in range(5)}
    assert not result.trajectories  # none of them was ever scored on its own
    benign = await _run(young, artifact, value=0.01)
    assert benign.campaign_at == {}


async def test_a_tail_awaiting_its_quiet_spell_does_not_hold_back_the_campaign_sweeps(
        artifact: Artifact) -> None:
    """Sweeps run on the runtime's schedule whatever is pending: an account whose tail falls
    quiet only in a day must not delay the sweep that finds a young campaign a minute later."""
    config = replace(engine_config(artifact), tail_quiet_s=86400.0)
    elder = _session("elder", 10, addr="198.51.100.7", template="Tell me about {i}.")
    young = [_session(f"s{i}", artifact.min_requests - 1, gap=5.0) for i in range(5)]
    young = [replace(s, requests=[replace(r, ts=r.ts + 600.0) for r in s.requests])
             for s in young]
    result = await replay([elder, *young], ConstantScorer(1.0), artifact, lambda a: "all",
                          config)
    last = max(r.ts for s in young for r in s.requests)
    assert {f"s{i}" for i in range(5)} <= set(result.campaign_at)
    assert max(result.campaign_at[f"s{i}"] for i in range(5)) <= last + 60.0
    assert result.trajectories["elder"][-1].position == 10  # its tail, scored a day later


async def test_campaigns_are_only_sought_within_a_group(artifact: Artifact) -> None:
    sessions = [_session(f"s{i}", 12) for i in range(4)]
    result = await replay(sessions, ConstantScorer(0.0), artifact, lambda a: a)
    assert result.campaign_at == {}
