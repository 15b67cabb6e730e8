"""The detector as the app sees it: a feature sink with a lifecycle and a readiness check.

``build_detector`` is the one place the app asks for it; it returns the disabled detector until
the classifier runtime is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.detect.sink import FeatureSink, NullSink
from gateway.settings import Settings


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


def build_detector(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], redis: Redis | None,
    on_account_changed: Callable[[str], None],
) -> Detector:
    return DisabledDetector()
