"""``gateway demo``: one command, no services, and the printed examples work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from openai import OpenAI

from tests.support.servers import free_port, wait_healthy

API_KEY = "sk-gw-demoDEMOdemo0123456789abcdefghijklmnopqrst"
ADMIN_TOKEN = "demo-admin-token"


def _start_demo(state: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port),
         "--upstream-port", str(free_port()), "--api-key", API_KEY,
         "--admin-token", ADMIN_TOKEN, "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    output, _ = process.communicate(timeout=30)
    return output


def test_demo_serves_the_sdk_with_the_printed_key_and_admin_token(tmp_path: Path) -> None:
    port = free_port()
    process = _start_demo(tmp_path, port)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process)
        client = OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0)
        reply = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "Hello"}])
        assert reply.choices[0].message.content
        accounts = httpx.get(base + "/admin/v1/accounts",
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
        assert [a["name"] for a in accounts["items"]] == ["demo"]
    finally:
        output = _stop(process)
    assert API_KEY in output
    assert f"{base}/v1/chat/completions" in output

    # A second run on the same state reuses the account and the key.
    process = _start_demo(tmp_path, port)
    try:
        wait_healthy(base, process)
        assert OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0).models.list().data
    finally:
        _stop(process)
