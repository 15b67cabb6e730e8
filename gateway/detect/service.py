"""The detector as the app sees it: a feature sink with a lifecycle and a readiness check.

``build_detector`` is the one place the app asks for it. Detection is on when
``GATEWAY_DETECTION_ENABLED`` says so or, left unset, when the classifier artifact exists (one
ships with the package). Windows live in Redis when ``GATEWAY_REDIS_URL`` is set (shared by
every replica), in this process otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.detect.dataset import WINDOW
from gateway.detect.enforce import DbPolicy, Thresholds
from gateway.detect.redis_store import RedisStore
from gateway.detect.risk import RiskState
from gateway.detect.runtime import Engine, EngineConfig
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact, load_scorer
from gateway.detect.sink import FeatureSink, NullSink
from gateway.detect.store import MemoryStore, WindowStore
from gateway.records import RequestRecord
from gateway.settings import Settings

log = logging.getLogger(__name__)


class Detector(FeatureSink, Protocol):
    async def start(self) -> None:
        ...

    async def stop(self) -> None:
        ...

    def ready(self) -> bool | None:
        """Whether the classifier can score; None when detection is disabled."""
        ...


class DisabledDetector(NullSink):
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def ready(self) -> bool | None:
        return None


class ClassifierDetector:
    """The engine plus its database policy. The artifact is read and the scorer loaded in
    ``start`` (no I/O at construction); requests observed before that are not scored."""

    def __init__(self, settings: Settings, store: WindowStore, policy: DbPolicy) -> None:
        self.settings = settings
        self.store = store
        self.policy = policy
        self.engine: Engine | None = None
        policy.engine = self

    def observe(self, record: RequestRecord, prompt: str) -> None:
        if self.engine is not None:
            self.engine.observe(record, prompt)

    async def start(self) -> None:
        settings = self.settings
        artifact = Artifact.load(artifact_path(settings))
        scorer = load_scorer(artifact, settings.classifier_device, settings.detection_backend,
                             settings.detection_threads)
        config = EngineConfig(
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
        )
        self.policy.model_version = artifact.version
        if self.policy.thresholds.flag <= 0:
            self.policy.thresholds = replace(self.policy.thresholds, flag=artifact.threshold)
        self.store.window = artifact.window
        self.engine = Engine(config, scorer, artifact, self.store, self.policy)
        await self.engine.start()
        log.info("extraction classifier %s on %s", artifact.version, scorer.name)

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()
        else:
            await self.store.close()

    def ready(self) -> bool | None:
        return self.engine is not None and self.engine.ready()

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("detector not started")
        return self.engine

    async def explain(self, arrays: Any) -> list[str]:
        return await self._engine().explain(arrays)

    async def windows(self, accounts: Sequence[str]) -> dict[str, list[Any]]:
        return dict(await self._engine().windows(accounts))

    async def set_risk(self, account: str, state: RiskState) -> None:
        await self.store.set_risk(account, state)

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until everything observed has been scored and acted on (tests, benchmarks)."""
        await self._engine().drain(timeout_s)
        await self.policy.idle()


def artifact_path(settings: Settings) -> Path:
    return Path(settings.detection_model_path) if settings.detection_model_path \
        else DEFAULT_ARTIFACT


def detection_enabled(settings: Settings) -> bool:
    if settings.detection_enabled is not None:
        return settings.detection_enabled
    return artifact_path(settings).exists()


def build_detector(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], redis: Redis | None,
    on_account_changed: Callable[[str], None],
) -> Detector:
    if not detection_enabled(settings):
        return DisabledDetector()
    store: WindowStore
    if settings.redis_url is not None:
        owns = redis is None
        client = redis or Redis.from_url(settings.redis_url, socket_connect_timeout=1.0,
                                         socket_timeout=1.0)
        store = RedisStore(client, WINDOW, settings.detection_window_ttl_s, owns_client=owns)
    else:
        store = MemoryStore(WINDOW)
    thresholds = Thresholds(
        flag=settings.detection_flag_threshold or 0.0,  # 0: the artifact's, set at start
        throttle=settings.detection_throttle_threshold,
        suspend=settings.detection_suspend_threshold,
    )
    policy = DbPolicy(sessions, thresholds, "unknown", on_account_changed,
                      settings.detection_risk_flush_interval_s)
    return ClassifierDetector(settings, store, policy)
