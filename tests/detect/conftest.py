"""Fixtures for detection tests: records and a tiny trained artifact (databases: the root
conftest's migrated ``engine`` and ``sessions``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.detect.offline.train import TrainConfig, train
from gateway.records import RequestRecord


def record(prompt: str = "hello there", *, account: str = "acct_1", ts: float = 1.0e9,
           rid: str = "req_1", **fields: Any) -> tuple[RequestRecord, str]:
    rec = RequestRecord(request_id=rid, account_id=account, key_id="key_1",
                        route="/v1/chat/completions", method="POST", status_code=200,
                        prompt_chars=len(prompt), created_at=datetime.fromtimestamp(ts, UTC),
                        **fields)
    return rec, prompt


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained in seconds on a few simulated accounts (quality is not the point)."""
    out = tmp_path_factory.mktemp("artifact")
    config = TrainConfig(seed=3, accounts_per_profile=3, requests=(24, 48), epochs=3,
                         name="tiny")
    return train(out, config, log=lambda _: None)


@pytest.fixture(params=["single", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The detection state's Redis: the local server, and a real 3-primary cluster."""
    if request.param == "cluster":
        yield request.getfixturevalue("redis_cluster_url")
    else:
        yield "redis://127.0.0.1:6379/0"
