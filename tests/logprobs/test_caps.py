"""The per-tier logprob and sampling caps, on every route that generates text."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.auth.principal import Principal
from gateway.domain.limits import default_tiers
from gateway.errors import GatewayError
from gateway.logprobs.caps import build_caps
from gateway.metrics import Metrics
from gateway.sampling import CONSTRAINING_FIELDS
from gateway.settings import Settings

STANDARD = Principal("key", "acct", "active", "standard", default_tiers()["standard"])
ENTERPRISE = Principal("key", "acct", "active", "enterprise", default_tiers()["enterprise"])


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


# --- constrained decoding with logprobs: logit differences by another name --------------------

CHAT_LOGPROBS = {"messages": [{"role": "user", "content": "hi"}], "logprobs": True,
                 "top_logprobs": 1}


@pytest.mark.parametrize("field", sorted(CONSTRAINING_FIELDS))
def test_logprobs_from_a_constrained_distribution_need_the_logit_bias_permission(
    field: str, metrics: Metrics,
) -> None:
    """vLLM computes logprobs before bad_words / stop_token_ids / min_tokens act (the chosen
    lower-ranked token's raw logprob comes back) and renormalises them under a grammar over
    tokens the caller picks: what a logit_bias sweep extracts. Alone, each is legitimate."""
    value: Any = 5 if field == "min_tokens" else ["x"]
    caps = build_caps(Settings(mode="local"), metrics)
    assert _refused_param("/v1/chat/completions", {**CHAT_LOGPROBS, field: value},
                          metrics) == field
    assert _refused_param("/v1/completions", {"logprobs": 1, field: value}, metrics) == field
    caps.check(STANDARD, "/v1/chat/completions", {field: value})  # no logprobs: fine
    caps.check(ENTERPRISE, "/v1/chat/completions", {**CHAT_LOGPROBS, field: value})


@pytest.mark.parametrize(("fields", "param"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"no": "type"}}, "response_format"),
    ({"response_format": ["unhashable"]}, "response_format"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"tool_choice": ["unhashable"]}, "tool_choice"),
])
def test_grammars_and_forced_tools_with_logprobs_need_the_permission_too(
    fields: dict[str, Any], param: str, metrics: Metrics,
) -> None:
    assert _refused_param("/v1/chat/completions", {**CHAT_LOGPROBS, **fields}, metrics) == param
    caps = build_caps(Settings(mode="local"), metrics)
    caps.check(STANDARD, "/v1/chat/completions", fields)
    caps.check(ENTERPRISE, "/v1/chat/completions", {**CHAT_LOGPROBS, **fields})


def test_free_formats_and_tool_choices_keep_their_logprobs(metrics: Metrics) -> None:
    caps = build_caps(Settings(mode="local"), metrics)
    free: list[dict[str, Any]] = [{"response_format": {"type": "text"}}, {"tool_choice": "auto"},
                                  {"tool_choice": "none"}, {"bad_words": []}, {"min_tokens": 0}]
    for fields in free:
        caps.check(STANDARD, "/v1/chat/completions", {**CHAT_LOGPROBS, **fields})
    responses = {"input": "hi", "top_logprobs": 2}
    caps.check(STANDARD, "/v1/responses", {**responses, "text": {"format": {"type": "text"}}})
    assert _refused_param("/v1/responses", {**responses, "text": {"format": {
        "type": "json_schema"}}}, metrics) == "text"
