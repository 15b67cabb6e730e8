"""The echo upstream answers from the prompt alone; a harness may script reply lengths."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from gateway.modelserver.echo import create_echo_app, reply_words

pytestmark = pytest.mark.unit


def _chat(client: TestClient, prompt: str, **extra: object) -> dict:
    body = {"model": "echo-1", "messages": [{"role": "user", "content": prompt}], **extra}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    return response.json()


def test_unscripted_replies_are_8_to_23_words_chosen_by_the_prompt() -> None:
    client = TestClient(create_echo_app())
    lengths = {len(reply_words(f"prompt {i}", None)) for i in range(200)}
    assert min(lengths) >= 8 and max(lengths) <= 23
    reply = _chat(client, "prompt 7")
    assert reply["usage"]["completion_tokens"] == len(reply_words("prompt 7", None))


def test_a_scripted_prompt_is_answered_at_its_length_and_cut_by_max_tokens() -> None:
    lengths: dict[str, int] = {}
    client = TestClient(create_echo_app(lengths))
    lengths["translate this long paragraph"] = 300  # added while the app serves
    long = _chat(client, "translate this long paragraph")
    assert long["usage"]["completion_tokens"] == 300
    assert len(long["choices"][0]["message"]["content"].split()) == 300
    cut = _chat(client, "translate this long paragraph", max_tokens=40, n=2)
    assert cut["usage"]["completion_tokens"] == 80
    other = _chat(client, "something else")
    assert 8 <= other["usage"]["completion_tokens"] <= 23


def test_a_scripted_completion_prompt_streams_at_its_length() -> None:
    client = TestClient(create_echo_app({"Once upon a time": 50}))
    with client.stream("POST", "/v1/completions", json={
            "model": "echo-1", "prompt": "Once upon a time", "stream": True}) as response:
        chunks = [line for line in response.iter_lines() if line.startswith("data: {")]
    assert len(chunks) == 50
