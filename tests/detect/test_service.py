"""``build_detector``: enabled from settings, lazy loading, device honoured, Redis or memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.detect.redis_window_store import RedisWindowStore
from gateway.detect.service import ClassifierDetector, DisabledDetector, build_detector
from gateway.detect.window_store import MemoryWindowStore
from gateway.metrics import Metrics
from gateway.redis_client import connect
from gateway.settings import Settings


def _settings(**values: object) -> Settings:
    return Settings(mode="local", **values)  # type: ignore[arg-type]


def _noop(_: str) -> None:
    return None


async def test_disabled_by_setting(sessions: async_sessionmaker[AsyncSession],
                                   metrics: Metrics) -> None:
    detector = build_detector(_settings(detection_enabled=False), sessions, None, _noop, metrics)
    assert isinstance(detector, DisabledDetector) and detector.ready() is None


async def test_missing_artifact_disables_by_default(
        sessions: async_sessionmaker[AsyncSession], tmp_path: Path, metrics: Metrics) -> None:
    settings = _settings(detection_model_path=str(tmp_path / "none.json"))
    assert isinstance(build_detector(settings, sessions, None, _noop, metrics), DisabledDetector)


async def test_enabled_detector_loads_at_start(
        sessions: async_sessionmaker[AsyncSession], tiny_artifact: Path,
        metrics: Metrics) -> None:
    settings = _settings(detection_model_path=str(tiny_artifact), classifier_device="cpu")
    detector = build_detector(settings, sessions, None, _noop, metrics)
    assert isinstance(detector, ClassifierDetector)
    assert isinstance(detector.store, MemoryWindowStore)
    assert detector.ready() is False
    await detector.start()
    try:
        assert detector.ready() is True
        assert detector.engine is not None and detector.engine.scorer.name == "onnx-cpu"
        assert detector.policy is not None and detector.policy.model_version.startswith("tiny+")
        assert 0 < detector.policy.thresholds.flag <= 1
        assert detector.policy.ledger is detector.risk and detector.risk.store is detector.store
        assert detector.engine.metrics is metrics and detector.policy.metrics is metrics
    finally:
        await detector.stop()
    assert detector.ready() is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
async def test_cuda_without_gpu_fails_at_start(
        sessions: async_sessionmaker[AsyncSession], tiny_artifact: Path,
        metrics: Metrics) -> None:
    settings = _settings(detection_model_path=str(tiny_artifact), classifier_device="cuda")
    detector = build_detector(settings, sessions, None, _noop, metrics)
    with pytest.raises(RuntimeError, match="cuda"):
        await detector.start()
    await detector.stop()


async def test_redis_url_shares_windows(sessions: async_sessionmaker[AsyncSession],
                                        tiny_artifact: Path, redis_url: str,
                                        metrics: Metrics) -> None:
    client = connect(redis_url)
    settings = _settings(detection_model_path=str(tiny_artifact), redis_url=redis_url)
    detector = build_detector(settings, sessions, client, _noop, metrics)
    assert isinstance(detector, ClassifierDetector)
    assert isinstance(detector.store, RedisWindowStore) and detector.store.redis is client
    await detector.stop()
    await client.aclose()
