"""Replay labelled sessions through the production detection engine, on a simulated clock.

An offline scorer that builds every window of a session and scores it in bulk measures an
idealised detector. This drives :class:`gateway.detect.runtime.DetectionEngine` itself — the same
``observe`` (prompt head cut where production cuts it), micro-batcher, account selection
(every ``score_every`` requests, none before ``min_requests``, and a quiet account's unscored
requests before each sweep), window store, model, risk update and campaign clustering — with
the requests of all sessions merged in time order and fed in micro-batches as the runtime would
form them (requests within ``max_wait_s`` of each other, at most ``max_batch``). The engine's
clock is the simulated time.

What comes back is threshold-free: each account's trajectory (requests seen, classifier score,
risk) at every scoring, and when each account first appeared in a campaign found by
:meth:`gateway.detect.runtime.DetectionEngine.find_campaigns` on the sweep schedule
(``campaign_interval_s``).
Campaign sweeps run per *group* of accounts (an operation; all benign accounts as one), so that
unrelated simulated actors are never clustered together by accident of a shared generator.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from gateway.detect import campaign, coverage
from gateway.detect.offline.real_traffic import to_record
from gateway.detect.offline.simulate import Session
from gateway.detect.runtime import DetectionEngine, DetectionEngineConfig, Scored
from gateway.detect.scoring import Artifact, Scorer
from gateway.detect.window_store import MemoryWindowStore
from gateway.domain.workloads import Workload, withholds
from gateway.metrics import Metrics

CHUNK_SPAN_S = 1.0
"""A micro-batch never spans more simulated time than this, so campaign sweeps land within a
second of their schedule."""


@dataclass(frozen=True, slots=True)
class Point:
    """One scoring of an account."""

    position: int
    """How many of the account's requests the engine had seen."""
    ts: float
    score: float
    risk: float
    distinct: int = 0
    """The account's distinct requests after it (:func:`gateway.detect.coverage.count`)."""


@dataclass
class Replay:
    trajectories: dict[str, list[Point]] = field(default_factory=lambda: defaultdict(list))
    campaign_at: dict[str, float] = field(default_factory=dict)
    """Account -> simulated time of the first sweep that listed it in a campaign."""
    campaigns: list[tuple[float, list[str]]] = field(default_factory=list)

    def _verdicts(self, account: str, workload: Workload | None) -> list[Point]:
        """The scorings whose verdict stands (a declared workload withholds the others)."""
        return [p for p in self.trajectories.get(account, [])
                if not withholds(workload, p.distinct)]

    def peak(self, account: str, workload: Workload | None = None) -> float:
        return max((p.risk for p in self._verdicts(account, workload)), default=0.0)

    def flagged_at(self, account: str, threshold: float,
                   workload: Workload | None = None) -> Point | None:
        """The scoring at which the account's risk first reached ``threshold`` with its verdict
        standing (the policy's rule: :func:`gateway.domain.workloads.withholds`)."""
        return next((p for p in self._verdicts(account, workload) if p.risk >= threshold),
                    None)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Recorder:
    """The engine's policy sink: keeps what was scored, acts on nothing."""

    def __init__(self) -> None:
        self.scored: list[Scored] = []

    async def on_scored(self, results: Sequence[Scored]) -> None:
        self.scored.extend(results)

    async def on_campaigns(self, found: Sequence[campaign.Campaign]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def engine_config(artifact: Artifact) -> DetectionEngineConfig:
    """The configuration the gateway runs the artifact with, default settings otherwise."""
    return DetectionEngineConfig(window=artifact.window, min_requests=artifact.min_requests,
                        score_every=artifact.score_every)


Event = tuple[float, int, int]
"""(time, session index, request index)"""


def _events(sessions: Sequence[Session]) -> list[Event]:
    return sorted((req.ts, si, ri) for si, s in enumerate(sessions)
                  for ri, req in enumerate(s.requests))


def _chunks(events: Sequence[Event], sessions: Sequence[Session], config: DetectionEngineConfig
            ) -> Iterator[list[Event]]:
    """Micro-batches: an account's second request joins a batch only within ``max_wait_s``."""
    chunk: list[Event] = []
    members: set[str] = set()
    start = 0.0
    for ev in events:
        account = sessions[ev[1]].account
        if chunk and (len(chunk) >= config.max_batch or ev[0] - start > CHUNK_SPAN_S
                      or (account in members and ev[0] - start > config.max_wait_s)):
            yield chunk
            chunk, members = [], set()
        if not chunk:
            start = ev[0]
        chunk.append(ev)
        members.add(account)
    if chunk:
        yield chunk


class _Sweeper:
    """Campaign sweeps on the runtime's schedule, per group, only for groups that changed, each
    after the quiet accounts' unscored requests were scored (as the runtime does); one more sweep
    is due when the next account with requests not yet scored falls quiet."""

    def __init__(self, engine: DetectionEngine, store: MemoryWindowStore,
                 group_of: Callable[[str], str], result: Replay, clock: _Clock,
                 record: Callable[[], list[str]]) -> None:
        self.engine, self.store, self.group_of, self.result = engine, store, group_of, result
        self.clock, self.record = clock, record
        self.members: dict[str, set[str]] = defaultdict(set)
        self.dirty: set[str] = set()
        self.tick: float | None = None

    def changed(self, accounts: Sequence[str], now: float) -> None:
        for account in accounts:
            group = self.group_of(account)
            self.members[group].add(account)
            self.dirty.add(group)
        if accounts:
            self._due(now)

    def _due(self, at: float) -> None:
        """A sweep at the first tick of the runtime's schedule at or after ``at``, unless one
        is due sooner."""
        interval = self.engine.config.campaign_interval_s
        tick = math.ceil(at / interval) * interval
        self.tick = tick if self.tick is None else min(self.tick, tick)

    async def until(self, now: float) -> None:
        """Run the sweeps that were due at or before ``now``."""
        while self.tick is not None and self.tick <= now:
            tick = self.tick
            self.tick = None
            await self._sweep(tick)

    async def _sweep(self, tick: float) -> None:
        cfg = self.engine.config
        self.clock.now = max(self.clock.now, tick)
        await self.engine.score_tails()
        self.dirty.update(self.group_of(a) for a in self.record())
        sketches = await self.store.sketches(tick - cfg.campaign_horizon_s)
        for group in sorted(self.dirty):
            # In name order: clustering links accounts in the order it meets them, and a set's
            # order changes with the interpreter's hash seed.
            mine = {a: sketches[a] for a in sorted(self.members[group]) if a in sketches}
            for found in await self.engine.find_campaigns(mine):
                self.result.campaigns.append((tick, found.accounts))
                for account in found.accounts:
                    self.result.campaign_at.setdefault(account, tick)
        self.dirty.clear()
        quiet = self.engine.quiet_at()
        if quiet is not None:
            self._due(max(quiet, tick + cfg.campaign_interval_s))


async def replay(sessions: Sequence[Session], scorer: Scorer, artifact: Artifact,
                 group_of: Callable[[str], str],
                 config: DetectionEngineConfig | None = None) -> Replay:
    """Every request of ``sessions`` through a fresh engine; trajectories and campaigns."""
    config = config or engine_config(artifact)
    clock = _Clock()
    recorder = _Recorder()
    store = MemoryWindowStore(config.window, max_accounts=max(100_000, 2 * len(sessions)))
    # An offline run: the engine's metrics go to a registry of its own that nothing exports.
    engine = DetectionEngine(config, scorer, artifact, store, recorder, clock=clock,
                    metrics=Metrics(CollectorRegistry()))
    result = Replay()
    seen: Counter[str] = Counter()

    def record() -> list[str]:
        """Trajectory points of what was scored since the last call; the accounts."""
        scored = [r.account for r in recorder.scored]
        for r in recorder.scored:
            result.trajectories[r.account].append(
                Point(seen[r.account], r.state.updated, r.score, r.state.risk,
                      coverage.count(r.state.coverage)))
        recorder.scored.clear()
        return scored

    sweeper = _Sweeper(engine, store, group_of, result, clock, record)
    for chunk in _chunks(_events(sessions), sessions, config):
        await sweeper.until(chunk[0][0])
        clock.now = chunk[-1][0]
        for _, si, ri in chunk:
            engine.observe(*to_record(sessions[si], ri))
            seen[sessions[si].account] += 1
        await engine.cycle()
        record()
        # Every account that sent something has a new sketch (young ones are sketched before
        # they can be scored), so its group may have changed.
        sweeper.changed(list(dict.fromkeys(sessions[si].account for _, si, _ in chunk)),
                        clock.now)
    await sweeper.until(math.inf)
    return result
