"""A real gateway (uvicorn, loopback port) in front of a real upstream, on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from gateway.app import GatewayApp, create_app
from gateway.modelserver.echo import create_echo_app
from gateway.settings import Settings
from gateway.store.migrate import upgrade
from tests.support.servers import RecordingApp, serve_in_thread
from tests.support.vllm_server import running_vllm

ADMIN_TOKEN = "adm-Zk3v8QpL2mX9rT6wN1bY4cH7jD5fG0sA"
HASH_SECRET = "khs-Qw8eR3tY6uI1oP4aS7dF2gH5jK9lZ0x"
WATERMARK_SECRET = "wms-Mn4bV7cX1zL8kJ5hG2fD9sA6pO3iU0y"
UPSTREAM_KEY = "upstream-credential-Hq7Wm2Kx9Lp4Rt6"


@dataclass
class Stack:
    base: str
    app: GatewayApp
    upstream: RecordingApp

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                            timeout=10)

    def new_account(self, name: str = "e2e", tier: str = "standard") -> tuple[str, str]:
        """A fresh account and one of its keys, created through the admin API."""
        with self.admin() as admin:
            account = admin.post("/admin/v1/accounts", json={"name": name, "tier": tier})
            account.raise_for_status()
            account_id = account.json()["id"]
            key = admin.post(f"/admin/v1/accounts/{account_id}/keys", json={})
            key.raise_for_status()
        return account_id, key.json()["key"]

    def client(self, key: str, **options: Any) -> OpenAI:
        return OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, **options)


def stack_settings(
    database_url: str, upstream_url: str, spill_dir: Path, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "mode": "production", "database_url": database_url, "upstream_url": upstream_url,
        "upstream_api_key": UPSTREAM_KEY, "admin_token": ADMIN_TOKEN,
        "key_hash_secret": HASH_SECRET, "watermark_secret": WATERMARK_SECRET,
        "key_cache_ttl_s": 0.5, "request_log_flush_interval_s": 0.05,
        "request_log_spill_dir": str(spill_dir), "request_log_replay_interval_s": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def migrated_postgres(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, RecordingApp]]:
    app = RecordingApp(create_echo_app())
    with serve_in_thread(app) as url:
        yield url + "/v1", app


StackFactory = Callable[..., AbstractContextManager[Stack]]


@pytest.fixture(scope="module")
def make_stack(
    migrated_postgres: str, upstream: tuple[str, RecordingApp],
    tmp_path_factory: pytest.TempPathFactory,
) -> StackFactory:
    @contextmanager
    def make(**overrides: Any) -> Iterator[Stack]:
        values = {"database_url": migrated_postgres, "upstream_url": upstream[0]}
        values.update(overrides)
        settings = stack_settings(spill_dir=tmp_path_factory.mktemp("spill"), **values)
        app = create_app(settings)
        with serve_in_thread(app) as base:
            yield Stack(base, app, upstream[1])

    return make


@pytest.fixture(scope="module")
def stack(make_stack: StackFactory) -> Iterator[Stack]:
    with make_stack() as running:
        yield running


@pytest.fixture(scope="package")
def vllm_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vllm") / "vllm.log"


@pytest.fixture(scope="package")
def vllm(vllm_log: Path) -> Iterator[str]:
    """Real vLLM with the watermark processor keyed by ``WATERMARK_SECRET`` (its ``/v1`` base
    URL), requiring ``UPSTREAM_KEY``: one start (about a minute) shared by every module of this
    package that asks for it, stopped after the package's last test. Request logging (test only:
    it logs prompts) is how vLLM reports an abort."""
    with running_vllm(WATERMARK_SECRET, vllm_log, api_key=UPSTREAM_KEY,
                      extra_args=("--enable-log-requests",)) as base:
        yield base
