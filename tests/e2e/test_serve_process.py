"""``gateway serve`` as operators run it: its own process, several workers, env configuration."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from gateway.modelserver.echo import create_echo_app
from tests.e2e.conftest import ADMIN_TOKEN, HASH_SECRET, UPSTREAM_KEY, WATERMARK_SECRET
from tests.support.servers import gateway_process, serve_in_thread
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve_in_thread(create_echo_app()) as url:
        yield url + "/v1"


def _env(database_url: str, upstream_url: str, tmp: str) -> dict[str, str]:
    return {
        "GATEWAY_DATABASE_URL": database_url, "GATEWAY_UPSTREAM_URL": upstream_url,
        "GATEWAY_UPSTREAM_API_KEY": UPSTREAM_KEY, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_KEY_HASH_SECRET": HASH_SECRET, "GATEWAY_WATERMARK_SECRET": WATERMARK_SECRET,
        "GATEWAY_REQUEST_LOG_SPILL_DIR": tmp, "GATEWAY_LOG_LEVEL": "warning",
    }


def _metric(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_add_up_across_worker_processes(
    migrated_postgres: str, upstream_url: str, tmp_path: pytest.TempPathFactory
) -> None:
    env = _env(migrated_postgres, upstream_url, str(tmp_path))
    with gateway_process(env, "--workers", "2") as base:
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        account = admin.post("/admin/v1/accounts", json={"name": "workers"}).json()
        key = admin.post(f"/admin/v1/accounts/{account['id']}/keys", json={}).json()["key"]
        for _ in range(40):
            # A fresh connection each time so that both workers take requests.
            response = httpx.get(base + "/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200
        labels = 'route="/v1/models",status_class="2xx"'
        wait_until(lambda: _metric(httpx.get(base + "/metrics").text,
                                   "gateway_requests_total", labels) == 40, timeout=10)
        # Whichever worker answers (a fresh connection each time), the totals are the same.
        texts = [httpx.get(base + "/metrics").text for _ in range(10)]
        assert {_metric(t, "gateway_requests_total", labels) for t in texts} == {40.0}
        assert "gateway_request_duration_seconds_bucket" in texts[0]
        assert all(ADMIN_TOKEN not in t and key not in t for t in texts)


def test_serve_refuses_weak_secrets_without_echoing_them(tmp_path: pytest.TempPathFactory) -> None:
    env = {**_env("sqlite:///unused.db", "http://127.0.0.1:1/v1", str(tmp_path)),
           "GATEWAY_ADMIN_TOKEN": "changeme"}
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "GATEWAY_ADMIN_TOKEN" in result.stderr
    assert HASH_SECRET not in result.stderr + result.stdout
