"""The gateway's vLLM mode without a vLLM process: the setting, the request rewrite and the
launcher's command line (tests/e2e/test_vllm_upstream.py runs them against real vLLM)."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from gateway.proxy.validation import GENERATION_ROUTES
from gateway.settings import Settings
from gateway.upstream_identity.vllm_xargs import vllm_xargs
from gateway.upstream_identity.xargs_tag import TagVerifier, tag_key
from gateway.vllm.demo import choose_upstream
from gateway.vllm.launcher import PROCESSOR, VllmOptions, command, environment, find_python

SECRET = "wms-Mn4bV7cX1zL8kJ5hG2fD9sA6pO3iU0y"


def test_vllm_mode_without_a_watermark_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="GATEWAY_UPSTREAM_KIND=vllm needs"):
        Settings(mode="local", upstream_kind="vllm")
    with pytest.raises(ValidationError):
        Settings(mode="local", upstream_kind="gpu")
    assert Settings(mode="local").upstream_kind == "reference"
    assert vllm_xargs(Settings(mode="local"), GENERATION_ROUTES) is None


def test_generation_requests_carry_the_gateways_tag_and_nothing_else() -> None:
    rewriter = vllm_xargs(Settings(mode="local", upstream_kind="vllm", watermark_secret=SECRET),
                          GENERATION_ROUTES)
    assert rewriter is not None
    assert rewriter.applies("/v1/chat/completions") and rewriter.applies("/v1/responses")
    assert not rewriter.applies("/v1/embeddings")
    payload = {"model": "m", "prompt": "x"}
    rewriter.stamp(payload, "acct_1", "req_0123456789abcdef")
    xargs = payload["vllm_xargs"]
    assert isinstance(xargs, dict)
    assert set(xargs) == {"watermark_account", "watermark_expires", "watermark_nonce",
                          "watermark_tag"}
    assert TagVerifier(tag_key(SECRET.encode())).verify(xargs) == "acct_1"


def test_the_launcher_loads_the_processor_and_hands_vllm_the_secret() -> None:
    options = VllmOptions(port=9, python=sys.executable, api_key="upstream-key")
    argv = command(options)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--logits-processors") + 1] == PROCESSOR
    env = environment(options, SECRET, base={"GATEWAY_WATERMARK_SECRET": "stale"})
    assert env["GATEWAY_WATERMARK_SECRET"] == SECRET
    assert env["VLLM_USE_V2_MODEL_RUNNER"] == "0" and env["VLLM_API_KEY"] == "upstream-key"
    with pytest.raises(ValueError, match="watermark secret"):
        environment(options, None, base={})
    plain = VllmOptions(port=9, python=sys.executable, watermark=False)
    assert "--logits-processors" not in command(plain)
    assert "GATEWAY_WATERMARK_SECRET" not in environment(plain, None, base={})
    assert find_python({"GATEWAY_VLLM_PYTHON": "/opt/vllm/python"}) == "/opt/vllm/python"


def test_demo_runs_vllm_wherever_it_is_installed_and_the_reference_server_elsewhere() -> None:
    def missing() -> str:
        raise FileNotFoundError("vLLM is not installed")

    assert choose_upstream("auto", lambda: "/opt/vllm/bin/python")[0] == "vllm"
    assert choose_upstream("auto", missing)[0] == "reference"
    assert choose_upstream("vllm", missing)[0] == "vllm"  # the launcher then says what is missing
    assert choose_upstream("reference", lambda: sys.executable)[0] == "reference"
