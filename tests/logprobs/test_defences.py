"""Logprob caps and keyed logprob noise, as the proxy applies them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.auth.principal import Principal
from gateway.domain.limits import TierLimits
from gateway.errors import GatewayError
from gateway.logprobs.caps import build_caps
from gateway.logprobs.shaping import IdentityShaper, build_shaper
from gateway.metrics import Metrics
from gateway.proxy.validation import validate
from gateway.settings import Settings

LIMITS = TierLimits(requests_per_minute=1, tokens_per_minute=1, tokens_per_day=1, max_concurrent=1)
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"


def principal(tier: str) -> Principal:
    return Principal(key_id="k", account_id="acct", status="active", tier=tier, limits=LIMITS)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(("tier", "payload", "param"), [
    ("standard", body(top_logprobs=6, logprobs=True), "top_logprobs"),
    ("standard", body(n=5), "n"),
    ("standard", body(logit_bias={"1": 5}, logprobs=True), "logit_bias"),
    ("standard", body(logit_bias={"1": 50}), "logit_bias"),
    ("standard", body(logit_bias={str(i): 1 for i in range(51)}), "logit_bias"),
    ("free", body(n=2), "n"),
    ("throttled", body(logprobs=True, top_logprobs=1), "top_logprobs"),
])
def test_policy_refuses_with_a_400_naming_the_parameter(
        tier: str, payload: dict[str, Any], param: str, metrics: Metrics) -> None:
    caps = build_caps(Settings(mode="local"), metrics)
    with pytest.raises(GatewayError) as caught:
        caps.check(principal(tier), CHAT, payload)
    assert caught.value.status == 400 and caught.value.param == param


def test_policy_allows_what_the_tier_allows_and_reads_completions_logprobs(
        metrics: Metrics) -> None:
    caps = build_caps(Settings(mode="local"), metrics)
    caps.check(principal("standard"), CHAT, body(top_logprobs=5, logprobs=True, n=4))
    caps.check(principal("standard"), CHAT, body(logit_bias={"1": 20}))
    caps.check(principal("enterprise"), CHAT,
               body(logit_bias={"1": 100}, logprobs=True, top_logprobs=20))
    with pytest.raises(GatewayError) as caught:
        caps.check(principal("standard"), "/v1/completions",
                   {"model": "m", "prompt": "x", "logprobs": 6})
    assert caught.value.param == "logprobs"


def chat_response(values: list[list[tuple[str, float]]]) -> dict[str, Any]:
    content = [{"token": top[0][0], "logprob": top[0][1],
                "top_logprobs": [{"token": t, "logprob": v} for t, v in top]} for top in values]
    return {"choices": [{"index": 0, "logprobs": {"content": content}}]}


TOPS = [[("a", -0.1), ("b", -2.5), ("c", -2.6), ("d", -7.0)],
        [("e", -0.01), ("f", -4.0), ("g", -9.0), ("h", -9.001)]]


def shaped(account: str, request: dict[str, Any], response: dict[str, Any],
           settings: Settings | None = None, route: str = CHAT) -> dict[str, Any]:
    """As the proxy does it: validated, capped, then shaped with the prompt it extracted."""
    prompt = validate(route, request).prompt
    build_caps(Settings(mode="local"), Metrics(CollectorRegistry())).check(
        principal("enterprise"), route, request)
    shaper = build_shaper(settings or Settings(mode="local"))
    return shaper.begin(account, route, request, prompt).shape(copy.deepcopy(response))


def values_of(response: dict[str, Any]) -> list[list[float]]:
    return [[t["logprob"] for t in entry["top_logprobs"]]
            for entry in response["choices"][0]["logprobs"]["content"]]


def test_noise_is_deterministic_rank_preserving_and_rounded() -> None:
    original = [[v for _, v in top] for top in TOPS]
    first = values_of(shaped("acct", body(), chat_response(TOPS)))
    assert first == values_of(shaped("acct", body(), chat_response(TOPS)))
    assert first != original
    for row in first:
        assert row == sorted(row, reverse=True) and all(v <= 0 for v in row)
        assert all(round(v, 2) == v for v in row)
    entry = shaped("acct", body(), chat_response(TOPS))["choices"][0]["logprobs"]["content"][0]
    assert entry["logprob"] == entry["top_logprobs"][0]["logprob"]


def test_noise_ignores_logit_bias_but_depends_on_account_and_prompt() -> None:
    base = values_of(shaped("acct", body(), chat_response(TOPS)))
    assert values_of(shaped("acct", body(logit_bias={"5": 3}, seed=9),
                            chat_response(TOPS))) == base
    assert values_of(shaped("other", body(), chat_response(TOPS))) != base
    changed = body()
    changed["messages"][0]["content"] = "hi!"
    assert values_of(shaped("acct", changed, chat_response(TOPS))) != base


def junk_message_key() -> dict[str, Any]:
    request = body()
    request["messages"][0]["junk"] = 7
    return request


@pytest.mark.parametrize("request_", [
    junk_message_key(),
    body(prompt=3),
    body(suffix="tail"),
    body(response_format={"type": "text"}),
], ids=["unknown-message-key", "prompt-on-chat", "suffix-on-chat", "text-response-format"])
def test_junk_the_model_never_sees_does_not_change_the_noise(request_: dict[str, Any]) -> None:
    """Otherwise one prompt repeated with fresh junk gets fresh noise, and averaging cancels it."""
    base = values_of(shaped("acct", body(), chat_response(TOPS)))
    assert values_of(shaped("acct", request_, chat_response(TOPS))) == base


@pytest.mark.parametrize("sampling", [
    {"temperature": 0.0}, {"temperature": 1.7}, {"seed": 1}, {"seed": 2},
    {"logit_bias": {"1": -100}}, {"top_p": 0.5}, {"n": 3},
], ids=str)
def test_sweeping_sampling_parameters_keeps_the_noise(sampling: dict[str, Any]) -> None:
    base = values_of(shaped("acct", body(), chat_response(TOPS)))
    assert values_of(shaped("acct", body(**sampling), chat_response(TOPS))) == base


def responses_response(values: list[list[tuple[str, float]]]) -> dict[str, Any]:
    logprobs = chat_response(values)["choices"][0]["logprobs"]["content"]
    return {"output": [{"type": "message", "content": [
        {"type": "output_text", "text": "", "logprobs": logprobs}]}]}


def responses_values(response: dict[str, Any]) -> list[list[float]]:
    return [[t["logprob"] for t in entry["top_logprobs"]]
            for entry in response["output"][0]["content"][0]["logprobs"]]


@pytest.mark.parametrize("other", [
    {"model": "m", "input": "what is 2+3?"},
    {"model": "m", "input": "what is 2+2?", "instructions": "answer in French"},
], ids=["input", "instructions"])
def test_different_responses_prompts_get_different_noise(other: dict[str, Any]) -> None:
    """Two prompts sharing one noise would cancel it in their difference."""
    base = responses_values(shaped("acct", {"model": "m", "input": "what is 2+2?"},
                                   responses_response(TOPS), route=RESPONSES))
    assert responses_values(
        shaped("acct", other, responses_response(TOPS), route=RESPONSES)) != base


def test_completions_noise_depends_on_the_suffix_the_model_reads() -> None:
    response = {"choices": [{"index": 0, "logprobs": {
        "tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": [dict(TOPS[0])]}}]}
    request = {"model": "m", "prompt": "def f():"}

    def noise(extra: dict[str, Any]) -> Any:
        out = shaped("acct", {**request, **extra}, response, route=COMPLETIONS)
        return out["choices"][0]["logprobs"]["top_logprobs"]

    assert noise({"suffix": "    return 1"}) != noise({})
    assert noise({"temperature": 0.3, "seed": 4}) == noise({})


def test_streamed_chunks_get_the_same_noise_as_the_whole_response() -> None:
    whole = values_of(shaped("acct", body(), chat_response(TOPS)))

    session = build_shaper(Settings(mode="local")).begin("acct", CHAT, body(), "hi")
    streamed: list[list[float]] = []
    for top in TOPS:
        streamed += values_of(session.shape(chat_response([top])))
    assert streamed == whole


def test_legacy_completions_logprobs_are_perturbed_too() -> None:
    response = {"choices": [{"index": 0, "logprobs": {
        "tokens": ["a", "e"], "token_logprobs": [-0.1, -0.01],
        "top_logprobs": [dict(TOPS[0]), dict(TOPS[1])]}}]}
    out = shaped("acct", body(), response)["choices"][0]["logprobs"]
    assert out["token_logprobs"] != [-0.1, -0.01]
    assert out["token_logprobs"][0] == out["top_logprobs"][0]["a"]


def test_the_shaper_can_be_switched_off() -> None:
    off = Settings(mode="local", logprob_noise=0, logprob_decimals=8)
    assert isinstance(build_shaper(off), IdentityShaper)

