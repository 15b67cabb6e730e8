"""End to end: ``gateway suspect`` (a real process) samples a suspect over HTTP and names the
account whose watermark its outputs carry, among every account of the gateway's database.

The radioactive suspect is the reference model server behind a real gateway, answering with
the harvester's API key: its text carries the harvester's key, as a strongly radioactive
student's would (the statistics against real students: ``bench/watermark/suspect_bench.py``).
The control suspect is the same model served without any watermark: nobody is attributed.

The same check against real vLLM (CPU, the shipped tiny model, the watermark processor
``gateway.watermark.vllm_adapter:BatchWatermark`` keyed by the gateway's secret) behind a gateway
in vLLM mode (``GATEWAY_UPSTREAM_KIND=vllm``): vLLM marks what it generates for the harvester with
the harvester's key, and ``gateway suspect`` names the harvester among every account; with the
harvester left out of the candidates, the same vLLM text is attributed to nobody. vLLM is the
package's shared fixture (``tests/e2e/conftest.py``, one start for this module and
``test_vllm_upstream.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.modelserver.server import create_model_server_app
from gateway.vllm.launcher import TINY_MODEL_NAME
from tests.e2e.conftest import WATERMARK_SECRET, Stack, StackFactory
from tests.modelserver.conftest import make_toy_model, toy_config
from tests.support.servers import serve_in_thread

SIGNING_SECRET = "upstream-signing-Sx4Pq8Lm2Tz6Rw1Ny5"


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_model(tmp_path_factory.mktemp("toy-model"))


@pytest.fixture(scope="module")
def marked_stack(make_stack: StackFactory, toy_model: Path) -> Iterator[Stack]:
    config = toy_config(toy_model, signing_secret=SIGNING_SECRET.encode(),
                        watermark_secret=WATERMARK_SECRET.encode())
    with serve_in_thread(create_model_server_app(config)) as url, make_stack(
            upstream_url=url + "/v1", upstream_signing_secret=SIGNING_SECRET) as stack:
        yield stack


@pytest.fixture(scope="module")
def plain_suspect(toy_model: Path) -> Iterator[str]:
    config = toy_config(toy_model, signing_secret=None, watermark_secret=None,
                        allow_unsigned=True)
    with serve_in_thread(create_model_server_app(config)) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def vllm_stack(make_stack: StackFactory, vllm: str) -> Iterator[Stack]:
    with make_stack(upstream_url=vllm, upstream_kind="vllm") as stack:
        yield stack


def suspect(base_url: str, api_key: str, database_url: str, out: Path,
            *extra: str, model: str = "student") -> tuple[int, dict[str, object]]:
    env = {**os.environ, "GATEWAY_MODE": "local", "GATEWAY_DATABASE_URL": database_url,
           "GATEWAY_WATERMARK_SECRET": WATERMARK_SECRET, "SUSPECT_API_KEY": api_key}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "suspect", "--base-url", base_url,
         "--api-key-env", "SUSPECT_API_KEY", "--model", model, "--allow-http",
         "--allow-private-network", "--max-queries", "48", "--queries-per-look", "12",
         "--max-tokens", "120", "--json", str(out), *extra],
        env=env, capture_output=True, text=True, timeout=300)
    assert api_key not in done.stdout + done.stderr
    assert WATERMARK_SECRET not in done.stdout + done.stderr
    return done.returncode, json.loads(out.read_text())


def test_the_suspect_is_attributed_to_the_harvester_among_all_accounts(
        marked_stack: Stack, migrated_postgres: str, tmp_path: Path) -> None:
    harvester, key = marked_stack.new_account("harvester")
    for i in range(20):
        marked_stack.new_account(f"bystander-{i}")
    code, report = suspect(marked_stack.base + "/v1", key, migrated_postgres,
                           tmp_path / "report.json", "--markdown", str(tmp_path / "report.md"))
    assert code == 0, report
    assert report["verdict"] == "attributed"
    assert [h["name"] for h in report["attributed"]] == [harvester]  # type: ignore[index]
    assert report["accounts_tested"] >= 21  # type: ignore[operator]
    assert report["queries"] <= 48  # type: ignore[operator]
    assert harvester in (tmp_path / "report.md").read_text()


def test_an_unwatermarked_suspect_is_attributed_to_nobody(
        marked_stack: Stack, plain_suspect: str, migrated_postgres: str, tmp_path: Path) -> None:
    marked_stack.new_account("someone")
    code, report = suspect(plain_suspect, "sk-anything", migrated_postgres,
                           tmp_path / "report.json", "--max-queries", "24")
    assert code == 1
    assert report["verdict"] == "not_attributed" and report["attributed"] == []
    assert report["queries"] == 24 and report["pairs_scored"] > 500  # type: ignore[operator]


# vLLM's context is 256 tokens: a prompt (a 24-character docstring opening, one byte token a
# character) and 120 tokens of reply fit.
VLLM_BUDGET = ("--max-queries", "48", "--queries-per-look", "12", "--max-tokens", "120")


def test_a_vllm_suspect_is_attributed_to_the_harvester_among_all_accounts(
        vllm_stack: Stack, migrated_postgres: str, tmp_path: Path) -> None:
    harvester, key = vllm_stack.new_account("vllm-suspect-harvester")
    for i in range(8):
        vllm_stack.new_account(f"vllm-suspect-bystander-{i}")
    code, report = suspect(vllm_stack.base + "/v1", key, migrated_postgres,
                           tmp_path / "report.json", *VLLM_BUDGET, model=TINY_MODEL_NAME)
    assert code == 0, report
    assert report["verdict"] == "attributed"
    assert [h["name"] for h in report["attributed"]] == [harvester]  # type: ignore[index]
    assert report["accounts_tested"] >= 9  # type: ignore[operator]
    assert report["failed_queries"] == 0 and report["queries"] <= 48  # type: ignore[operator]


def test_vllm_text_is_attributed_to_nobody_when_its_account_is_not_a_candidate(
        vllm_stack: Stack, migrated_postgres: str, tmp_path: Path) -> None:
    _, key = vllm_stack.new_account("vllm-suspect-unlisted")
    others = [vllm_stack.new_account(f"vllm-suspect-other-{i}")[0] for i in range(8)]
    code, report = suspect(vllm_stack.base + "/v1", key, migrated_postgres,
                           tmp_path / "report.json", *VLLM_BUDGET, "--max-queries", "24",
                           "--accounts", ",".join(others), model=TINY_MODEL_NAME)
    assert code == 1, report
    assert report["verdict"] == "not_attributed" and report["attributed"] == []
    assert report["accounts_tested"] == 8 and report["queries"] == 24  # type: ignore[operator]
    assert report["pairs_scored"] > 500  # type: ignore[operator]
