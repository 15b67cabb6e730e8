"""The detection engine: features in, micro-batched scores out, never in the way of a reply.

Stdlib + numpy (+ the scorer). ``observe`` (on the event loop, after the reply) extracts the
request's features and appends them to a bounded in-memory queue; nothing else. A background
task drains the queue in micro-batches — at most ``max_batch`` windows per scoring call, waiting
at most ``max_wait_s`` for a batch to fill — appends the requests to the account windows and
fetches the windows of the accounts due for scoring in one store round trip, then builds and
scores the windows in a worker thread (ONNX Runtime releases the GIL).

An account is due every ``score_every`` requests (and at most once per ``min_score_interval_s``),
and once more when it falls quiet with requests not yet scored: at each campaign sweep, every
account silent for ``tail_quiet_s`` since its last unscored request is scored
(:meth:`DetectionEngine.score_tails`). Without it the requests after an account's last scoring
were never read by the model: an account that warms up on cover traffic, is scored clean, then
harvests fewer than ``score_every`` answers and leaves was never judged on its harvest.
A window holding the requests of a few clients of one key (people and tools sharing it) is
scored per client, and the account gets the highest score (:mod:`gateway.detect.clients`); a
client with fewer requests in the window than the floor of that split is the one exception to
"every request read" (at most two requests of a window).
Each scoring also tells the risk policy whether the account sent anything it had not sent
before (:mod:`gateway.detect.coverage`): re-asking its own requests raises no risk.
Before it has ``min_requests`` requests it cannot be scored, but it is sketched for campaign
clustering on every request (no model needed), and a cluster of such young accounts is scored
as one account at the campaign sweep: an operation split into accounts too small to score is
not invisible.
Under overload — more queued work than a batch can take — the stride grows with the backlog, so
each account is scored less often; the skipped scorings are counted
(``gateway_detect_shed_total``). Requests are never slowed or failed by it; if the queue itself
overflows, the oldest feature records are dropped and counted (``gateway_detect_dropped_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from gateway.detect import behaviour, campaign, clients, coverage, features, risk, window
from gateway.detect.features import RequestFeatures
from gateway.detect.risk import RiskState
from gateway.detect.scoring import Artifact, Scorer
from gateway.detect.window_store import Fetched, Sketch, WindowStore
from gateway.metrics import Metrics
from gateway.records import RequestRecord

log = logging.getLogger(__name__)
V = TypeVar("V")
INLINE_EXTRACT = 128
TAIL_BATCHES = 16
"""Batches of quiet accounts one :meth:`DetectionEngine.score_tails` call scores, at most."""
Pending = tuple[str, RequestRecord | RequestFeatures, str | None, bytes | None]
"""(account, record, the part of the prompt features read, digest of the whole prompt when that
part is not all of it) or (account, extracted features, None, None)."""


@dataclass(frozen=True)
class DetectionEngineConfig:
    window: int = 64
    min_requests: int = 8
    score_every: int = 4
    max_batch: int = 256
    max_wait_s: float = 0.05
    queue_max: int = 50_000
    min_score_interval_s: float = 0.05
    half_life_s: float = 3 * 86400.0
    campaign_interval_s: float = 30.0
    campaign_horizon_s: float = 7 * 86400.0
    campaign_min_accounts: int = 3
    campaign_min_score: float = 0.3
    campaign_max_merged: int = 64
    """Young clusters and behavioural cohorts scored as one window per sweep, at most."""
    cohort_min_accounts: int = 5
    cohort_birth_span_s: float = 3600.0
    tail_quiet_s: float = 3600.0
    """Silence after which an account's unscored requests are scored at the next sweep: the
    end of a session. Measured on the adaptive suite's calibration accounts: at 300 s a
    person's pauses within a session became scorings, their peaks rose and the calibrated
    threshold with them (0.924 -> 0.952; sybil x short_fast 86% -> 51%); at 3600 s one
    account of 710 moved (0.934) and every sybil cell probed was flagged (bench/adaptive_suite.md,
    phase 16)."""
    max_tracked_accounts: int = 200_000


@dataclass
class Scored:
    account: str
    score: float
    previous: RiskState
    state: RiskState
    window: WindowArrays
    """What gave the score: the account's window, or a part of it — one client's requests, or
    the small clients' together (:func:`gateway.detect.clients.parts`)."""
    request_ids: list[str]
    """The requests of :attr:`window`, oldest first."""
    template: Template | None = None
    """The account's template sketch when :attr:`window` is less than the whole window:
    campaign sketches read the account (its template, its network), not the part that scored."""


WindowArrays = window.WindowArrays
Template = window.Template


class PolicySink(Protocol):
    async def on_scored(self, results: Sequence[Scored]) -> None:
        """Must return quickly: long work (database) goes to tasks of its own."""
        ...

    async def on_campaigns(self, found: Sequence[campaign.Campaign]) -> None:
        ...

    async def start(self) -> None:
        ...

    async def stop(self) -> None:
        ...


class DetectionEngine:
    def __init__(self, config: DetectionEngineConfig, scorer: Scorer, artifact: Artifact,
                 store: WindowStore, policy: PolicySink,
                 clock: Callable[[], float] = time.time, *, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._errors = {stage: metrics.detect_errors.labels(stage)
                        for stage in ("cycle", "campaign", "features", "tails")}
        self.scorer = scorer
        self.artifact = artifact
        self.store = store
        self.policy = policy
        self.clock = clock
        self._pending: deque[Pending] = deque()
        self._since: dict[str, int] = {}
        self._last_scored: dict[str, float] = {}
        self._seen: dict[str, int] = {}
        """Requests observed per account by this replica (bounded like ``_since``)."""
        self._heard: dict[str, float] = {}
        """Account -> engine time its last request was queued here (the quiet clock; kept
        for every account ``_since`` counts unread requests of)."""
        self._scoring = asyncio.Lock()
        """Held from fetching windows to saving their risks: the batcher and the tail scoring
        never update one account's risk from the same starting state."""
        self._merged_cache: dict[tuple[str, ...], tuple[float, float]] = {}
        """Cluster -> (newest member sketch time, merged score)."""
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    # --- hot path ------------------------------------------------------------------------------

    def observe(self, record: RequestRecord, prompt: str) -> None:
        """Queue the request for feature extraction (done in batches, off the reply path).
        Never raises, never awaits; keeps only the part of the prompt features read, and of a
        longer prompt a 16-byte digest of all of it (coverage: text varied where the features do
        not read still makes a request new; BLAKE2b, about 1 us a kilobyte).

        A rate-limited request (429) is not observed: it got no answer, so it harvested nothing,
        and how fast the client sends is in the answered requests' timing. Counted, the limits
        themselves made extraction of a benign batch: a labelling job refused for half of its
        requests was flagged in 40 of 40 accounts by window-v6 and window-v7 alike (the soak's
        benign clients are refused ten times for every answer)."""
        account = record.account_id
        if account is None or record.status_code == 429:
            return
        whole = coverage.digest(prompt) if len(prompt) > features.MAX_PROMPT_CHARS else None
        self._enqueue((account, record, features.bounded(prompt), whole))

    def observe_features(self, account: str, item: RequestFeatures) -> None:
        """Queue already-extracted features (replays, benchmarks of the batcher alone)."""
        self._enqueue((account, item, None, None))

    def _enqueue(self, entry: Pending) -> None:
        account = entry[0]
        if len(self._pending) >= self.config.queue_max:
            self._pending.popleft()
            self.metrics.detect_dropped.inc()
        self._pending.append(entry)
        self._heard[account] = self.clock()
        self._idle.clear()
        if not self._wake.is_set():
            self._wake.set()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        await self.policy.start()
        self._tasks = [asyncio.create_task(self._run(), name="detect-batcher"),
                       asyncio.create_task(self._campaigns(), name="detect-campaigns")]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.policy.stop()
        await self.store.close()

    def ready(self) -> bool:
        return bool(self._tasks) and not self._tasks[0].done()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until everything observed so far has been scored (tests, benchmarks)."""
        async with asyncio.timeout(timeout_s):
            await self._idle.wait()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    # --- micro-batcher -------------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        while not self._stopping:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._pending) < cfg.max_batch:
                await asyncio.sleep(cfg.max_wait_s)
            try:
                await self.cycle()
            except Exception:
                log.exception("detection cycle failed; continuing")
                self._errors["cycle"].inc()
                await asyncio.sleep(0.5)

    def _young(self, items: Sequence[tuple[str, RequestFeatures]]) -> list[str]:
        """Accounts of this batch with too few requests to score: they are sketched (no model
        needed) on every request, so campaign clustering sees an account from its first
        request — a sybil that stays under ``min_requests`` is not invisible."""
        young: list[str] = []
        for account in dict.fromkeys(a for a, _ in items):
            seen = self._seen.get(account, 0)
            if seen < self.config.min_requests:
                young.append(account)
        now = self.clock()
        for account, _ in items:
            self._seen[account] = self._seen.get(account, 0) + 1
            self._since[account] = self._since.get(account, 0) + 1
            self._heard.setdefault(account, now)
        return young

    def _select(self, items: Sequence[tuple[str, RequestFeatures]], backlog: int,
                now: float) -> list[str]:
        """Accounts to score now; the stride grows with the backlog (load shedding)."""
        cfg = self.config
        stride = cfg.score_every * (1 + backlog // cfg.max_batch)
        due: list[str] = []
        shed = 0
        for account in dict.fromkeys(a for a, _ in items):
            since = self._since.get(account, 0)
            if since < cfg.score_every:
                continue
            if now - self._last_scored.get(account, 0.0) < cfg.min_score_interval_s:
                continue
            if since < stride or len(due) >= cfg.max_batch:
                shed += 1
                continue
            due.append(account)
        if shed:
            self.metrics.detect_shed.inc(shed)
        for account in due:
            self._last_scored[account] = now
        if len(self._since) > cfg.max_tracked_accounts:
            self._forget()
        return due

    def _forget(self) -> None:
        """Bound the per-account schedule: keep only accounts with requests no scoring has
        read (the others lose their place in the ``score_every`` count and their age), at most
        half the bound, those old enough to score first: crowding the tracker with fresh
        accounts never erases another account's pending tail."""
        floor = self.config.min_requests
        pending = sorted((a for a, since in self._since.items() if since > 0),
                         key=lambda a: (self._seen.get(a, 0) < floor, self._heard[a]))
        pending = pending[:self.config.max_tracked_accounts // 2]
        _keep(self._since, pending)
        _keep(self._seen, pending)
        _keep(self._last_scored, pending)
        _keep(self._heard, pending)

    async def cycle(self) -> None:
        """One micro-batch: append, fetch, score, update risks, hand results to the policy."""
        limit = 8 * self.config.max_batch
        entries = [self._pending.popleft() for _ in range(min(limit, len(self._pending)))]
        if not entries:
            return
        m = self.metrics
        m.detect_queue.set(len(self._pending))
        m.detect_observed.inc(len(entries))
        # Small batches inline (a thread hop would cost more than the work, ~20 us a request);
        # big ones in a worker thread so the event loop keeps serving replies meanwhile.
        unreadable = self._errors["features"]
        items = (_extract(entries, unreadable) if len(entries) <= INLINE_EXTRACT
                 else await asyncio.to_thread(_extract, entries, unreadable))
        async with self._scoring:
            young = self._young(items)
            due = self._select(items, len(self._pending), self.clock())
            fetched = await self.store.exchange(items, list(dict.fromkeys([*due, *young])))
            if due or young:
                await self._score_and_save(fetched, due, young)
            self._read(due)

    def _read(self, accounts: Iterable[str]) -> None:
        """Mark everything stored for ``accounts`` as read by a scoring. Called under
        ``_scoring`` after the save succeeded (nothing is stored meanwhile): a failed scoring
        leaves its requests unread, for the next scoring or the tail."""
        for account in accounts:
            if account in self._since:
                self._since[account] = 0

    async def score_tails(self) -> int:
        """Score the accounts quiet for ``tail_quiet_s`` with requests stored here that no
        scoring has read yet; returns how many were scored. Runs before each campaign sweep.

        Whether a request was read is the store's answer, not this replica's: an account's
        window is scored only when its newest stored request is not the one its last scoring
        (by any replica) read (:attr:`gateway.detect.risk.RiskState.read`), so replicas
        sharing a store score a tail once. At most ``TAIL_BATCHES * max_batch`` accounts per
        call, longest quiet first; the rest stay pending. A batch whose scoring fails is
        counted (``gateway_detect_errors_total{stage="tails"}``), stays pending and waits one
        more quiet spell, so it never blocks the others."""
        cfg = self.config
        quiet = sorted(self._quiet(self._since, self.clock()),
                       key=self._heard.__getitem__)[:TAIL_BATCHES * cfg.max_batch]
        scored = 0
        for start in range(0, len(quiet), cfg.max_batch):
            async with self._scoring:
                now = self.clock()
                part = self._quiet(quiet[start:start + cfg.max_batch], now)
                try:
                    fetched = await self.store.exchange([], part)
                    scored += await self._score_and_save(
                        fetched, [a for a in part if _unread(fetched, a)], [])
                except Exception:
                    log.exception("tail scoring failed for %d accounts; retried later",
                                  len(part))
                    self._errors["tails"].inc()
                    self._heard.update(dict.fromkeys(part, now))
                    continue
                self._read(part)
                self._last_scored.update(dict.fromkeys(part, now))
        return scored

    def _quiet(self, accounts: Iterable[str], now: float) -> list[str]:
        """Those of ``accounts`` with unread requests stored and none for ``tail_quiet_s``."""
        quiet = self.config.tail_quiet_s
        return [a for a in accounts if self._since.get(a, 0) > 0
                and now - self._heard.get(a, now) >= quiet]

    def quiet_at(self) -> float | None:
        """When the next account with requests no scoring has read falls quiet enough for
        :meth:`score_tails` (None: no account has any). Offline replays schedule sweeps by it."""
        heard = [self._heard[a] for a, since in self._since.items() if since > 0]
        return min(heard) + self.config.tail_quiet_s if heard else None

    async def _score_and_save(self, fetched: Fetched, due: Sequence[str],
                              young: Sequence[str]) -> int:
        """Score ``due``, sketch ``young``, save both, tell the policy; how many were scored."""
        m = self.metrics
        started = time.perf_counter()
        results = await asyncio.to_thread(self._score, fetched, due) if due else []
        m.detect_batch.observe(len(results))
        m.detect_batch_seconds.observe(time.perf_counter() - started)
        m.detect_scored.inc(len(results))
        for result in results:
            m.detect_scores.observe(result.score)
        now = self.clock()
        sketches = self._sketch_young(fetched, young, now)
        scored = [fetched.windows.get(r.account, []) for r in results]
        sketches.update({r.account: _sketch_scored(r, items, profile, now) for r, items, profile
                         in zip(results, scored, behaviour.profiles(scored), strict=True)})
        if not sketches:
            return 0
        await self.store.save({r.account: r.state for r in results}, sketches)
        if results:
            await self.policy.on_scored(results)
        return len(results)

    def _sketch_young(self, fetched: Fetched, young: Sequence[str], now: float
                      ) -> dict[str, Sketch]:
        """Template sketches of accounts too young to score; their score is 0 (no evidence
        yet: a campaign of them needs a shared network or suspicious elders to be flagged)."""
        out: dict[str, Sketch] = {}
        ready = [(a, items) for a in young
                 if 0 < len(items := fetched.windows.get(a, [])) < self.config.min_requests]
        profiles = behaviour.profiles([items for _, items in ready])
        for (account, items), profile in zip(ready, profiles, strict=True):
            signature, strength, network = window.sketch(items)
            out[account] = Sketch(signature, strength, network, 0.0, now, young=True,
                                  behaviour=profile, born=items[0].ts)
        return out

    def _score(self, fetched: Fetched, due: Sequence[str]) -> list[Scored]:
        cfg = self.config
        ready = [(a, fetched.windows.get(a, [])) for a in due]
        ready = [(a, items) for a, items in ready if len(items) >= cfg.min_requests]
        if not ready:
            return []
        recent = [items[-cfg.window:] for _, items in ready]
        split = clients.parts_batch(recent, cfg.min_requests)
        flat = [part for parts in split for part in parts]
        # Only what is scored is built: an account of several clients gets its parts' windows
        # and, for its campaign sketch, the template of its whole window (a fraction of one).
        windows = window.build_batch(flat, cfg.window)
        scores = np.concatenate([
            self.scorer.score(*window.stack(windows[start:start + cfg.max_batch]))
            for start in range(0, len(windows), cfg.max_batch)])
        results: list[Scored] = []
        first = 0
        for index, ((account, items), parts) in enumerate(zip(ready, split, strict=True)):
            best = first + int(np.argmax(scores[first:first + len(parts)]))
            first += len(parts)
            p = float(scores[best])
            before = fetched.risks.get(account, RiskState())
            novel, covered = coverage.cover(before.coverage, _newly_covered(items, before))
            after = risk.update(before, p, items[-1].ts, cfg.half_life_s,
                                novel=novel, coverage=covered, read=items[-1].request_id)
            whole = len(parts) == 1 and len(parts[0]) == len(recent[index])
            template = None if whole else window.sketch(recent[index])
            results.append(Scored(account, p, before, after, windows[best],
                                  [it.request_id for it in flat[best]], template))
        return results

    # --- campaigns -----------------------------------------------------------------------------

    async def _campaigns(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.config.campaign_interval_s)
            for step in (self.score_tails, self.sweep):
                try:
                    await step()
                except Exception:
                    log.exception("%s failed; retrying next interval", step.__name__)
                    self._errors["campaign"].inc()

    async def sweep(self) -> list[campaign.Campaign]:
        """Cluster recently scored accounts; hand campaigns to the policy (one replica at a time
        when the store is shared)."""
        cfg = self.config
        lock = getattr(self.store, "try_lock", None)
        if lock is not None and not await lock("campaign", int(cfg.campaign_interval_s * 900)):
            return []
        sketches = await self.store.sketches(self.clock() - cfg.campaign_horizon_s)
        found = await self.find_campaigns(sketches)
        if found:
            await self.policy.on_campaigns(found)
        return found

    async def find_campaigns(self, sketches: Mapping[str, Sketch]) -> list[campaign.Campaign]:
        """Template clusters judged on their members' scores, and clusters of accounts too
        young to be scored judged on their requests merged into one window (at most
        ``campaign_max_merged`` of those per sweep, largest first: bounded cost)."""
        cfg = self.config
        found = await asyncio.to_thread(campaign.clusters, sketches,
                                        min_accounts=cfg.campaign_min_accounts)
        found.sort(key=lambda c: -len(c.accounts))
        young = [c for c in found if campaign.needs_merged_score(c, cfg.campaign_min_score)]
        merged: dict[tuple[str, ...], float] = {}
        budget = _Budget(cfg.campaign_max_merged)
        for cluster in young:
            alike = self._alike_part(cluster.accounts, sketches)
            score = await self._merged(alike, sketches, budget) if alike else None
            if score is not None:
                merged[tuple(cluster.accounts)] = score
        judged = (campaign.judge(c, cfg.campaign_min_score, merged.get(tuple(c.accounts)),
                                 self.artifact.threshold) for c in found)
        out = [c for c in judged if c is not None]
        return out + await self._cohort_campaigns(sketches, out, budget)

    def _alike_part(self, accounts: Sequence[str], sketches: Mapping[str, Sketch]
                    ) -> list[str]:
        """The members of a young template cluster that one script could be driving: its
        largest behavioural cohort, when that is at least half of it (else nothing). A shared
        template is what every user of one product sends; an operation split into accounts
        runs one script, so its accounts also behave alike. Measured: without this, clusters
        of an IDE assistant's users (one system prompt) scored as one account were campaigns
        (45% of them on the held-out split)."""
        groups = campaign.cohorts({a: sketches[a] for a in accounts if a in sketches},
                                  min_accounts=self.config.campaign_min_accounts,
                                  birth_span_s=self.config.cohort_birth_span_s)
        largest = groups[0] if groups else []
        return largest if 2 * len(largest) >= len(accounts) else []

    async def _cohort_campaigns(self, sketches: Mapping[str, Sketch],
                                found: Sequence[campaign.Campaign], budget: _Budget
                                ) -> list[campaign.Campaign]:
        """Behavioural cohorts (alike accounts appearing together) not already inside a
        template campaign, judged on their requests merged, largest first: ``budget`` merged
        scores computed at most, while the scores of cohorts unchanged since an earlier sweep
        come from the cache at no cost. Were cached ones charged too, 64 standing cohorts
        (crowds on one SDK's defaults, or decoys an attacker keeps alive) would take the whole
        budget every sweep, and no new cohort would ever be judged."""
        cfg = self.config
        listed = {a for c in found for a in c.accounts}
        sketches = campaign.uncleared(sketches, cfg.campaign_min_score)
        groups = await asyncio.to_thread(campaign.cohorts, sketches,
                                         min_accounts=cfg.cohort_min_accounts,
                                         birth_span_s=cfg.cohort_birth_span_s)
        taken = listed | {a for accounts in groups for a in accounts}
        out: list[campaign.Campaign] = []
        for accounts in groups:
            if sum(a in listed for a in accounts) * 2 > len(accounts):
                continue
            merged = await self._merged(accounts, sketches, budget)
            if merged is None:
                continue
            judged = campaign.judge_cohort(accounts, merged, self.artifact.threshold,
                                           cfg.cohort_birth_span_s)
            if judged is not None:
                out.append(await self._with_stragglers(judged, sketches, taken, budget))
        return out

    async def _with_stragglers(self, found: campaign.Campaign, sketches: Mapping[str, Sketch],
                               taken: set[str], budget: _Budget) -> campaign.Campaign:
        """``found`` (a cohort judged a campaign) with the accounts its star left out that
        behave like its members, when their own requests taken together score at the flag
        threshold (:func:`gateway.detect.campaign.stragglers`); ``taken`` grows by them."""
        extra = await asyncio.to_thread(campaign.stragglers, found.accounts, sketches, taken,
                                        self.config.cohort_birth_span_s)
        merged = await self._merged(extra, sketches, budget) if extra else None
        if merged is None or merged < self.artifact.threshold:
            return found
        taken.update(extra)
        return campaign.joined(found, extra, merged)

    async def _merged(self, accounts: Sequence[str], sketches: Mapping[str, Sketch],
                      budget: _Budget) -> float | None:
        """:meth:`merged_score`, remembered until one of the accounts is sketched again (a
        sweep every ``campaign_interval_s`` would otherwise re-score every standing cluster);
        a score not remembered is computed only while ``budget`` lasts (None once spent)."""
        key = tuple(accounts)
        version = max(sketches[a].ts for a in accounts if a in sketches)
        cached = self._merged_cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        if not budget.take():
            return None
        if len(self._merged_cache) >= self.config.max_tracked_accounts // 10:
            self._merged_cache.clear()
        score = await self.merged_score(accounts)
        self._merged_cache[key] = (version, score)
        return score

    async def merged_score(self, accounts: Sequence[str]) -> float:
        """The classifier's score of these accounts' requests as one account's window, each
        account's requests in turn at its own pace (:func:`gateway.detect.window.in_turn`);
        0 when there are too few to score."""
        windows = (await self.store.exchange([], accounts)).windows
        items = window.in_turn([windows.get(a, []) for a in accounts], self.config.window)
        if len(items) < self.config.min_requests:
            return 0.0
        built = window.build(items, self.config.window)
        scores = await asyncio.to_thread(self.scorer.score, *window.stack([built]))
        return float(scores[0])


@dataclass
class _Budget:
    """Merged scores one sweep may still compute (cached ones cost nothing)."""

    left: int

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def _unread(fetched: Fetched, account: str) -> bool:
    """Whether the account's stored window holds a request no scoring has read."""
    return bool(_unread_items(fetched.windows.get(account, []),
                              fetched.risks.get(account, RiskState())))


def _keep(state: dict[str, V], accounts: Sequence[str]) -> None:
    kept = {a: state[a] for a in accounts if a in state}
    state.clear()
    state.update(kept)


def _sketch_scored(result: Scored, items: Sequence[RequestFeatures],
                   profile: npt.NDArray[np.float32], now: float) -> Sketch:
    w = result.window
    signature, strength, network = result.template or (w.signature, w.signature_strength,
                                                       w.network)
    return Sketch(signature, strength, network, result.score, now,
                  behaviour=profile if items else None, born=items[0].ts if items else 0.0)


def _newly_covered(items: Sequence[RequestFeatures], before: RiskState) -> list[int]:
    """Fingerprints of the window's requests no scoring had read before this one."""
    return [it.fingerprint for it in _unread_items(items, before)]


def _unread_items(items: Sequence[RequestFeatures], before: RiskState
                  ) -> Sequence[RequestFeatures]:
    """The window's requests stored after the last one a scoring read (all of them before the
    first scoring, or once that one has left the window). By store order, not by time: a
    harvest started before a short request but finished after it is still unread. A state
    saved before the read marker falls back to time."""
    if before.read:
        ids = [it.request_id for it in items]
        return items[ids.index(before.read) + 1:] if before.read in ids else items
    return [it for it in items if before.updated <= 0 or it.ts > before.updated]


def _extract(entries: Sequence[Pending],
             unreadable: Counter) -> list[tuple[str, RequestFeatures]]:
    """Features for queued entries, in order; unreadable records are dropped and counted."""
    records = [(r, p or "", d) for _, r, p, d in entries if isinstance(r, RequestRecord)]
    found = iter(features.extract_batch([(r, p) for r, p, _ in records],
                                        [d for _, _, d in records]))
    out: list[tuple[str, RequestFeatures]] = []
    bad = 0
    for account, obj, _, _ in entries:
        item = obj if isinstance(obj, RequestFeatures) else next(found)
        if item is None:
            bad += 1
        else:
            out.append((account, item))
    if bad:
        unreadable.inc(bad)
    return out
