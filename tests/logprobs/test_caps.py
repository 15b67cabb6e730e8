"""The per-tier logprob and sampling caps, on every route that generates text."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.auth.principal import Principal
from gateway.domain.limits import default_tiers
from gateway.errors import GatewayError
from gateway.logprobs.caps import build_caps
from gateway.metrics import Metrics
from gateway.settings import Settings

STANDARD = Principal("key", "acct", "active", "standard", default_tiers()["standard"])


def _refused_param(route: str, payload: dict[str, Any], metrics: Metrics) -> str | None:
    with pytest.raises(GatewayError) as caught:
        build_caps(Settings(mode="local"), metrics).check(STANDARD, route, payload)
    assert (caught.value.status, caught.value.code) == (400, "parameter_not_allowed")
    return caught.value.param


@pytest.mark.parametrize(("route", "payload", "param"), [
    ("/v1/chat/completions", {"n": 5}, "n"),
    ("/v1/chat/completions", {"top_logprobs": 6}, "top_logprobs"),
    ("/v1/completions", {"logprobs": 6}, "logprobs"),
    ("/v1/completions", {"best_of": 5}, "best_of"),
    ("/v1/completions", {"prompt": ["a"] * 5}, "prompt"),  # a batch: sequences per prompt
    ("/v1/completions", {"prompt": ["a", "b", "c"], "n": 2}, "prompt"),
    ("/v1/responses", {"top_logprobs": 6}, "top_logprobs"),
    ("/v1/chat/completions", {"logit_bias": {"1": 5}, "logprobs": True}, "logit_bias"),
])
def test_standard_tier_caps_apply_on_every_generation_route(
    route: str, payload: dict[str, Any], param: str, metrics: Metrics,
) -> None:
    assert _refused_param(route, payload, metrics) == param
    assert metrics.registry.get_sample_value(
        "gateway_policy_refusals_total", {"param": param}) == 1


def test_requests_within_the_caps_pass(metrics: Metrics) -> None:
    caps = build_caps(Settings(mode="local"), metrics)
    caps.check(STANDARD, "/v1/responses", {"top_logprobs": 5})
    caps.check(STANDARD, "/v1/completions", {"n": 4, "best_of": 4, "logprobs": 5})
    caps.check(STANDARD, "/v1/completions", {"prompt": ["a", "b"], "n": 2})  # 4 sequences
    caps.check(STANDARD, "/v1/completions", {"prompt": [1, 2, 3, 4, 5], "n": 4})  # token ids
