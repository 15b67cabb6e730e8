"""The engine: micro-batching, never blocking observe, load shedding, bounded queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.detect import coverage
from gateway.detect.campaign import Campaign
from gateway.detect.features import RequestFeatures
from gateway.detect.offline import simulate
from gateway.detect.risk import RiskState
from gateway.detect.runtime import DetectionEngine, DetectionEngineConfig, Scored
from gateway.detect.scoring import Artifact, load_scorer
from gateway.detect.window_store import Fetched, MemoryWindowStore, Sketch
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


def _engine(artifact_path: Path, clock: Callable[[], float] = time.time,
            store: MemoryWindowStore | None = None, policy: Recorder | None = None,
            **overrides: object) -> tuple[DetectionEngine, Recorder]:
    artifact = Artifact.load(artifact_path)
    values: dict[str, object] = {
        "window": artifact.window, "min_requests": 8, "score_every": 4, "max_batch": 64,
        "max_wait_s": 0.001, "min_score_interval_s": 0.0, "campaign_interval_s": 3600.0}
    values.update(overrides)
    policy = policy or Recorder()
    engine = DetectionEngine(DetectionEngineConfig(**values),  # type: ignore[arg-type]
                             load_scorer(artifact, "cpu"), artifact,
                             store or MemoryWindowStore(artifact.window), policy, clock,
                             metrics=Metrics(CollectorRegistry()))
    return engine, policy


def _sample(engine: DetectionEngine, name: str, **labels: str) -> float:
    """A sample of the engine's own metrics (0 when it has none yet)."""
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


async def _send(engine: DetectionEngine, count: int) -> None:
    """Requests ``w0``.. of account ``warm``, a second apart, each through its own
    micro-batch (so the engine's schedule sees them one by one)."""
    for i in range(count):
        engine.observe(*record(f"prompt {i}", account="warm", rid=f"w{i}", ts=1e9 + i))
        await engine.cycle()


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


async def test_a_quiet_accounts_unscored_requests_are_scored_before_the_sweep(
        tiny_artifact: Path) -> None:
    """Warm up on cover, get scored clean, harvest fewer than ``score_every`` answers, leave:
    those last answers are still read by the model, once the account has been quiet for
    ``tail_quiet_s`` (and not before: an active account is scored on its own schedule)."""
    now = [1e9]
    engine, policy = _engine(tiny_artifact, clock=lambda: now[0], tail_quiet_s=30.0)
    for i in range(11):
        engine.observe(*record(f"prompt {i}", account="warm", rid=f"w{i}", ts=1e9 + i))
        if i < 3:
            engine.observe(*record(f"prompt {i}", account="young", rid=f"y{i}", ts=now[0]))
        await engine.cycle()
    assert [r.request_ids[-1] for r in policy.scored] == ["w7"]
    assert engine.quiet_at() == 1e9 + 30.0
    now[0] += 29.0
    assert await engine.score_tails() == 0
    now[0] += 1.0
    assert await engine.score_tails() == 1  # too young to score: its tail is let go
    assert [r.request_ids[-1] for r in policy.scored] == ["w7", "w10"]
    assert len(policy.scored[-1].request_ids) == 11
    assert policy.scored[-1].previous == policy.scored[0].state
    assert engine.quiet_at() is None
    now[0] += 60.0
    assert await engine.score_tails() == 0  # nothing new: not scored again


async def test_crowding_the_tracker_never_erases_a_pending_tail(tiny_artifact: Path) -> None:
    """More accounts than the tracker holds (a sweep of throwaway keys) must not wipe the
    record of another account's unscored requests: the tail is still scored once quiet."""
    now = [1e9]
    engine, policy = _engine(tiny_artifact, clock=lambda: now[0], tail_quiet_s=30.0,
                             max_tracked_accounts=20)
    await _send(engine, 10)
    now[0] += 40.0  # the warm account is quiet: the crowd's requests all come after
    for i in range(40):
        engine.observe(*record("hello", account=f"crowd{i}", rid=f"c{i}", ts=now[0]))
    await engine.cycle()
    assert engine.quiet_at() == 1e9 + 30.0
    assert await engine.score_tails() == 1
    assert [r.request_ids[-1] for r in policy.scored] == ["w7", "w9"]


async def test_replicas_sharing_a_store_score_a_tail_once_whichever_saw_it(
        tiny_artifact: Path) -> None:
    """Requests spread over two replicas: neither has seen 8 of them, yet the shared window
    has; the tail is scored by one of them, and the other finds nothing left unread."""
    now = [1e9]
    shared = MemoryWindowStore(Artifact.load(tiny_artifact).window)
    replicas = [_engine(tiny_artifact, clock=lambda: now[0], store=shared, tail_quiet_s=30.0)
                for _ in range(2)]
    for i in range(11):
        engine = replicas[i % 2][0]
        engine.observe(*record(f"prompt {i}", account="warm", rid=f"w{i}", ts=1e9 + i))
        await engine.cycle()
    now[0] += 30.0
    assert [await engine.score_tails() for engine, _ in replicas] == [1, 0]
    tail = replicas[0][1].scored[-1]
    assert tail.request_ids[-1] == "w10" and len(tail.request_ids) == 11


async def test_requests_still_queued_are_not_quiet(tiny_artifact: Path) -> None:
    """A burst after a long silence, not yet through the batcher when the sweep comes, is
    neither skipped nor read as the old window's tail: it is scored once it is stored."""
    now = [1e9]
    engine, policy = _engine(tiny_artifact, clock=lambda: now[0], tail_quiet_s=30.0)
    await _send(engine, 8)
    now[0] += 3600.0
    for i in range(8, 11):
        engine.observe(*record(f"prompt {i}", account="warm", rid=f"w{i}", ts=now[0] + i))
    assert await engine.score_tails() == 0
    await engine.cycle()
    now[0] += 30.0
    assert await engine.score_tails() == 1
    assert [r.request_ids[-1] for r in policy.scored] == ["w7", "w10"]


class FailingFor(MemoryWindowStore):
    """A store that cannot read one account's window while ``broken``."""

    def __init__(self, window: int, account: str) -> None:
        super().__init__(window)
        self.account = account
        self.broken = False

    async def exchange(self, appends: Sequence[tuple[str, RequestFeatures]],
                       fetch: Iterable[str]) -> Fetched:
        fetch = list(fetch)
        if self.broken and self.account in fetch:
            raise ConnectionError("store down")
        return await super().exchange(appends, fetch)


async def test_a_failing_tail_batch_is_counted_retried_later_and_blocks_no_other(
        tiny_artifact: Path) -> None:
    now = [1e9]
    store = FailingFor(Artifact.load(tiny_artifact).window, "bad")
    engine, policy = _engine(tiny_artifact, clock=lambda: now[0], store=store,
                             tail_quiet_s=30.0, max_batch=1)
    for account in ("bad", "good"):  # "bad" is quiet longest: its batch comes first
        for i in range(10):
            engine.observe(*record(f"prompt {i}", account=account, rid=f"{account}{i}",
                                   ts=now[0] + i))
            await engine.cycle()
        now[0] += 1.0
    now[0] += 30.0
    store.broken = True
    errors = _sample(engine, "gateway_detect_errors_total", stage="tails")
    assert await engine.score_tails() == 1
    assert policy.scored[-1].request_ids[-1] == "good9"
    assert _sample(engine, "gateway_detect_errors_total", stage="tails") == errors + 1
    store.broken = False
    assert await engine.score_tails() == 0  # it waits one more quiet spell
    now[0] += 30.0
    assert await engine.score_tails() == 1
    assert policy.scored[-1].request_ids[-1] == "bad9"


class FailingSave(MemoryWindowStore):
    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.fail = False

    async def save(self, risks: Mapping[str, RiskState], sketches: Mapping[str, Sketch]
                   ) -> None:
        if self.fail and risks:
            self.fail = False
            raise ConnectionError("store down")
        await super().save(risks, sketches)


async def test_a_scoring_that_fails_to_save_leaves_its_requests_unread(
        tiny_artifact: Path) -> None:
    now = [1e9]
    store = FailingSave(Artifact.load(tiny_artifact).window)
    engine, policy = _engine(tiny_artifact, clock=lambda: now[0], store=store,
                             tail_quiet_s=30.0)
    for i in range(8):
        store.fail = i == 7
        engine.observe(*record(f"prompt {i}", account="warm", rid=f"w{i}", ts=1e9 + i))
        if i < 7:
            await engine.cycle()
    with pytest.raises(ConnectionError):
        await engine.cycle()
    now[0] += 30.0
    assert await engine.score_tails() == 1
    assert [r.request_ids[-1] for r in policy.scored] == ["w7"]


async def test_a_long_request_stored_after_a_later_short_one_is_still_read(
        tiny_artifact: Path) -> None:
    """Requests are stored when they finish: start three long generations, then send a short
    request that finishes first and triggers the scoring. The harvest lands afterwards, older
    by its start time than what was scored; it is unread all the same, and new to coverage."""
    now = [1e9 + 1000]
    engine, policy = _engine(tiny_artifact, clock=lambda: now[0], tail_quiet_s=30.0)
    await _send(engine, 7)
    engine.observe(*record("short", account="warm", rid="short", ts=1e9 + 101))
    await engine.cycle()
    for j in range(3):
        engine.observe(*record(f"harvest {j}", account="warm", rid=f"h{j}", ts=1e9 + 100))
        await engine.cycle()
    now[0] += 30.0
    assert await engine.score_tails() == 1
    assert [r.request_ids[-1] for r in policy.scored] == ["short", "h2"]
    before, after = policy.scored[-1].previous, policy.scored[-1].state
    assert before.read == "short" and after.read == "h2"
    assert coverage.count(after.coverage) == coverage.count(before.coverage) + 3


async def test_a_request_arriving_while_the_tails_wait_for_the_batcher_is_not_lost(
        tiny_artifact: Path) -> None:
    """The tail scoring picks its quiet accounts, then waits for the batcher's lock; a request
    of one of them arriving meanwhile makes it active again: it is not scored on its old
    window and marked read, but scored on its new one once quiet."""
    now = [1e9]
    engine, policy = _engine(tiny_artifact, clock=lambda: now[0], tail_quiet_s=30.0)
    await _send(engine, 10)
    now[0] += 30.0
    async with engine._scoring:  # the batcher mid-cycle
        tails = asyncio.create_task(engine.score_tails())
        await asyncio.sleep(0)
        engine.observe(*record("prompt 10", account="warm", rid="w10", ts=now[0]))
    assert await tails == 0
    await engine.cycle()
    now[0] += 30.0
    assert await engine.score_tails() == 1
    assert [r.request_ids[-1] for r in policy.scored] == ["w7", "w10"]


class TailWatcher(Recorder):
    """Records, and wakes the test when a scoring has read request ``last``."""

    def __init__(self, last: str) -> None:
        super().__init__()
        self.last = last
        self.read = asyncio.Event()

    async def on_scored(self, results: Sequence[Scored]) -> None:
        await super().on_scored(results)
        if any(r.request_ids[-1] == self.last for r in results):
            self.read.set()


async def test_the_running_engine_scores_tails_on_its_sweep_schedule(
        tiny_artifact: Path) -> None:
    watcher = TailWatcher("w9")
    engine, policy = _engine(tiny_artifact, policy=watcher, campaign_interval_s=0.05,
                             tail_quiet_s=0.05)
    await engine.start()
    try:
        for i in range(10):
            engine.observe(*record(f"prompt {i}", account="warm", rid=f"w{i}",
                                   ts=1e9 + i))
            await engine.drain()
        async with asyncio.timeout(30.0):
            await watcher.read.wait()
    finally:
        await engine.stop()
    assert policy.scored[-1].request_ids[-1] == "w9"  # nothing after it: no other scoring


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
