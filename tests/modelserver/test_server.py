"""The reference model server, over HTTP, with the official SDK where it applies."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from openai import AuthenticationError, OpenAI

from gateway.watermark.config import WatermarkConfig
from gateway.watermark.detector import detect
from gateway.watermark.keys import derive_key
from tests.modelserver.conftest import WATERMARK, GatewaySignature


def client(url: str, account: str = "acct-1") -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                  http_client=httpx.Client(auth=GatewaySignature(account)))


def post(url: str, path: str, payload: dict[str, Any], account: str = "acct-1"
         ) -> httpx.Response:
    return httpx.post(url + path, content=json.dumps(payload), timeout=60,
                      auth=GatewaySignature(account))


def test_unsigned_and_replayed_requests_get_an_openai_shaped_401(
        model_server: tuple[str, Any]) -> None:
    url, _ = model_server
    plain = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(AuthenticationError) as caught:
        plain.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "unsigned_request"
    first = post(url, "/v1/completions", {"model": "m", "prompt": "x", "max_tokens": 2})
    assert first.status_code == 200
    again = httpx.post(url + "/v1/completions", content=first.request.content,
                       headers=first.request.headers)
    assert again.status_code == 401 and again.json()["error"]["code"] == "unsigned_request"


def test_chat_with_n_seed_logprobs_and_usage(model_server: tuple[str, Any]) -> None:
    url, _ = model_server
    sdk = client(url)
    ask = {"model": "tiny", "messages": [{"role": "user", "content": "Return the"}],
           "max_tokens": 12, "n": 3, "seed": 7, "logprobs": True, "top_logprobs": 4}
    first = sdk.chat.completions.create(**ask)
    second = sdk.chat.completions.create(**ask)
    assert len(first.choices) == 3
    assert [c.message.content for c in first.choices] == [
        c.message.content for c in second.choices]
    assert len({c.message.content for c in first.choices}) > 1
    content = first.choices[0].logprobs.content
    assert len(content) == 12 and len(content[0].top_logprobs) == 4
    assert content[0].top_logprobs[0].logprob >= content[0].top_logprobs[1].logprob
    assert first.usage.completion_tokens == 36 and first.choices[0].finish_reason == "length"


def test_logit_bias_forces_a_token_and_temperature_zero_is_greedy(
        model_server: tuple[str, Any]) -> None:
    url, _ = model_server
    sdk = client(url)
    forced = sdk.completions.create(model="m", prompt="abc", max_tokens=5,
                                    logit_bias={str(ord("z")): 100})
    assert forced.choices[0].text == "zzzzz"
    greedy = [sdk.completions.create(model="m", prompt="abc", max_tokens=8, temperature=0,
                                     logprobs=2).choices[0] for _ in range(2)]
    assert greedy[0].text == greedy[1].text
    assert greedy[0].logprobs.tokens and len(greedy[0].logprobs.top_logprobs[0]) == 2


def test_stop_sequences_cut_the_text(model_server: tuple[str, Any]) -> None:
    url, _ = model_server
    sdk = client(url)
    reply = sdk.completions.create(model="m", prompt="abc", max_tokens=20, stop=["zz"],
                                   logit_bias={str(ord("z")): 100})
    assert reply.choices[0].text == "" and reply.choices[0].finish_reason == "stop"


def test_streaming_chat_matches_the_seeded_plain_reply(model_server: tuple[str, Any]) -> None:
    url, _ = model_server
    sdk = client(url)
    ask: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "def f"}],
                           "max_tokens": 15, "seed": 3, "n": 2}
    plain = sdk.chat.completions.create(**ask)
    texts = ["", ""]
    usage = None
    for chunk in sdk.chat.completions.create(**ask, stream=True,
                                             stream_options={"include_usage": True}):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
        usage = chunk.usage or usage
    assert texts == [c.message.content for c in plain.choices]
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens


def test_concurrent_requests_share_decoding_steps(model_server: tuple[str, Any]) -> None:
    url, app = model_server
    engine = app.state.server.engine  # type: ignore[attr-defined]
    payload = {"model": "m", "prompt": "x", "max_tokens": 40}

    def one(_: int) -> int:
        return post(url, "/v1/completions", payload).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(8))) == {200}
    assert engine.max_batch_seen > 1


def test_generations_carry_the_named_accounts_watermark(model_server: tuple[str, Any]) -> None:
    url, _ = model_server
    reply = post(url, "/v1/completions", {
        "model": "m", "prompt": "The", "max_tokens": 200, "logprobs": 0}, account="acct-42")
    tokens = [b for entry in reply.json()["choices"][0]["logprobs"]["tokens"]
              for b in _token_bytes(entry)]
    config = WatermarkConfig()
    assert detect(tokens, derive_key(WATERMARK, "acct-42"), config).p_value < 1e-6
    assert detect(tokens, derive_key(WATERMARK, "acct-43"), config).p_value > 1e-3


def _token_bytes(token: str) -> list[int]:
    if token.startswith("bytes:"):
        return list(bytes.fromhex(token[6:].replace("\\x", "")))
    return list(token.encode())


def test_bad_parameters_get_400s_naming_them(model_server: tuple[str, Any]) -> None:
    url, _ = model_server
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "m", "prompt": "x", "temperature": 5}, "temperature"),
        ({"model": "m", "prompt": "x", "logit_bias": {"x": 1}}, "logit_bias"),
        ({"model": "m", "prompt": "x", "n": 0}, "n"),
        ({"model": "m", "prompt": 3}, "prompt"),
    ]
    for payload, param in cases:
        reply = post(url, "/v1/completions", payload)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param
