"""The detector as the app sees it: a feature sink with a lifecycle and a readiness check.

``build_detector`` is the one place the app asks for it. Detection is on when
``GATEWAY_DETECTION_ENABLED`` says so or, left unset, when the classifier artifact exists (one
ships with the package). Windows live in Redis when ``GATEWAY_REDIS_URL`` is set (shared by
every replica), in this process otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.detect import explain
from gateway.detect.enforce import DbPolicy, Thresholds
from gateway.detect.ledger import RiskLedger
from gateway.detect.redis_window_store import RedisWindowStore
from gateway.detect.runtime import DetectionEngine, DetectionEngineConfig
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact, Scorer, load_scorer
from gateway.detect.sink import FeatureSink, NullSink
from gateway.detect.window_store import MemoryWindowStore, WindowStore
from gateway.metrics import Metrics
from gateway.records import RequestRecord
from gateway.redis_client import RedisClient
from gateway.redis_client import connect as connect_redis
from gateway.settings import Settings

log = logging.getLogger(__name__)


class Detector(FeatureSink, Protocol):
    risk: RiskLedger
    """The owner of account risk (the admin API dismisses flags through it)."""

    async def start(self) -> None:
        ...

    async def stop(self) -> None:
        ...

    def ready(self) -> bool | None:
        """Whether the classifier can score; None when detection is disabled."""
        ...


class DisabledDetector(NullSink):
    def __init__(self, risk: RiskLedger) -> None:
        self.risk = risk

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def ready(self) -> bool | None:
        return None


class StoreEvidence:
    """Flag evidence from the window store and the classifier: reasons and sample requests."""

    def __init__(self, store: WindowStore, scorer: Scorer, artifact: Artifact) -> None:
        self.store = store
        self.scorer = scorer
        self.artifact = artifact

    async def explain(self, arrays: Any) -> list[str]:
        return await asyncio.to_thread(explain.reasons, self.scorer, self.artifact, arrays)

    async def windows(self, accounts: Sequence[str]) -> dict[str, list[Any]]:
        return dict((await self.store.exchange([], accounts)).windows)


class ClassifierDetector:
    """The engine and its database policy, built in ``start`` in dependency order (scorer,
    evidence, policy, engine) once the scorer is loaded; requests observed before that are not
    scored. The artifact's metadata, the store and the risk ledger exist from construction (the
    admin API dismisses flags through the ledger whether or not the engine runs yet)."""

    def __init__(self, settings: Settings, artifact: Artifact, store: WindowStore,
                 ledger: RiskLedger, sessions: async_sessionmaker[AsyncSession],
                 on_account_changed: Callable[[str], None], *, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.artifact = artifact
        self.store = store
        self.risk = ledger
        self.sessions = sessions
        self.on_account_changed = on_account_changed
        self.policy: DbPolicy | None = None
        self.engine: DetectionEngine | None = None

    def observe(self, record: RequestRecord, prompt: str) -> None:
        if self.engine is not None:
            self.engine.observe(record, prompt)

    async def start(self) -> None:
        settings, artifact = self.settings, self.artifact
        scorer = load_scorer(artifact, settings.classifier_device, settings.detection_backend,
                             settings.detection_threads)
        thresholds = Thresholds(
            flag=settings.detection_flag_threshold or artifact.threshold,
            throttle=settings.detection_throttle_threshold,
            suspend=settings.detection_suspend_threshold,
        )
        self.policy = DbPolicy(self.sessions, thresholds, artifact.version, self.risk,
                               StoreEvidence(self.store, scorer, artifact),
                               self.on_account_changed, metrics=self.metrics)
        self.engine = DetectionEngine(engine_config(settings, artifact), scorer, artifact,
                                      self.store, self.policy, metrics=self.metrics)
        await self.engine.start()
        log.info("extraction classifier %s on %s", artifact.version, scorer.name)

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None
        else:
            await self.store.close()

    def ready(self) -> bool | None:
        return self.engine is not None and self.engine.ready()


def engine_config(settings: Settings, artifact: Artifact) -> DetectionEngineConfig:
    return DetectionEngineConfig(
        window=artifact.window,
        min_requests=settings.detection_min_requests or artifact.min_requests,
        score_every=settings.detection_score_every or artifact.score_every,
        max_batch=settings.detection_max_batch,
        max_wait_s=settings.detection_max_wait_ms / 1000,
        queue_max=settings.detection_queue_max,
        min_score_interval_s=settings.detection_min_score_interval_s,
        half_life_s=settings.detection_risk_half_life_s,
        campaign_interval_s=settings.detection_campaign_interval_s,
        campaign_min_accounts=settings.detection_campaign_min_accounts,
        tail_quiet_s=settings.detection_tail_quiet_s,
    )


def artifact_path(settings: Settings) -> Path:
    return Path(settings.detection_model_path) if settings.detection_model_path \
        else DEFAULT_ARTIFACT


def detection_enabled(settings: Settings) -> bool:
    if settings.detection_enabled is not None:
        return settings.detection_enabled
    return artifact_path(settings).exists()


def build_detector(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], redis: RedisClient | None,
    on_account_changed: Callable[[str], None], metrics: Metrics,
) -> Detector:
    """The composition root of detection: artifact metadata (a small JSON file; the scorer
    loads at start), store, ledger, detector."""
    if not detection_enabled(settings):
        return DisabledDetector(RiskLedger(sessions, None, metrics=metrics))
    artifact = Artifact.load(artifact_path(settings))
    store: WindowStore
    if settings.redis_url is not None:
        owns = redis is None
        client = redis or connect_redis(settings.redis_url, timeout_s=1.0)
        store = RedisWindowStore(client, artifact.window, settings.detection_window_ttl_s,
                           owns_client=owns)
    else:
        store = MemoryWindowStore(artifact.window)
    ledger = RiskLedger(sessions, store, settings.detection_risk_flush_interval_s,
                        metrics=metrics)
    return ClassifierDetector(settings, artifact, store, ledger, sessions, on_account_changed,
                              metrics=metrics)
