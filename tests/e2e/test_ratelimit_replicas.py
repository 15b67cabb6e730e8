"""Limits hold exactly across replicas: separate gateway processes with several workers each,
sharing one Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.domain.limits import default_tiers
from gateway.modelserver.echo import create_echo_app
from tests.e2e.conftest import ADMIN_TOKEN, HASH_SECRET, UPSTREAM_KEY, WATERMARK_SECRET
from tests.support.servers import gateway_process, serve_in_thread

LIMIT = 10
BURST = 100


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve_in_thread(create_echo_app()) as url:
        yield url + "/v1"


def _env(database_url: str, upstream_url: str, spill: Path) -> dict[str, str]:
    tiers = {name: limits.model_dump() for name, limits in default_tiers().items()}
    tiers["burst"] = {"requests_per_minute": LIMIT, "tokens_per_minute": 10**7,
                      "tokens_per_day": 10**9, "max_concurrent": 1000}
    return {
        "GATEWAY_DATABASE_URL": database_url, "GATEWAY_UPSTREAM_URL": upstream_url,
        "GATEWAY_UPSTREAM_API_KEY": UPSTREAM_KEY, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_KEY_HASH_SECRET": HASH_SECRET, "GATEWAY_WATERMARK_SECRET": WATERMARK_SECRET,
        "GATEWAY_REQUEST_LOG_SPILL_DIR": str(spill), "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0", "GATEWAY_TIERS": json.dumps(tiers),
        "GATEWAY_RATELIMIT_REDIS_TIMEOUT_S": "1.0",
    }


async def _burst(bases: list[str], key: str) -> list[int]:
    limits = httpx.Limits(max_connections=BURST)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        responses = await asyncio.gather(*(
            http.get(bases[i % len(bases)] + "/v1/models",
                     headers={"Authorization": f"Bearer {key}"})
            for i in range(BURST)
        ))
    return [r.status_code for r in responses]


def test_a_concurrent_burst_across_replicas_admits_exactly_the_limit(
    migrated_postgres: str, upstream_url: str, tmp_path: Path,
) -> None:
    env = _env(migrated_postgres, upstream_url, tmp_path)
    with gateway_process(env, "--workers", "2") as first, \
            gateway_process(env, "--workers", "2") as second:
        admin = httpx.Client(base_url=first, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        account = admin.post("/admin/v1/accounts", json={"name": "replicas", "tier": "burst"})
        key = admin.post(f"/admin/v1/accounts/{account.json()['id']}/keys", json={}).json()["key"]
        statuses = asyncio.run(_burst([first, second], key))
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == BURST - LIMIT
