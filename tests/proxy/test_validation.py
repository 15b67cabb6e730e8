"""The validated request model: every parameter the gateway reads is typed and range-checked
before anything uses it; violations are a 400 naming the parameter."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.proxy.validation import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    MAX_DEPTH,
    RESPONSES,
    ROUTE_SPECS,
    check_depth,
    flatten,
    validate,
)
from gateway.sampling import MAX_PROMPTS

MESSAGES = [{"role": "user", "content": "hi"}]


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES, **fields}


def _refusal(route: str, payload: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        validate(route, payload)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(("fields", "param"), [
    ({"max_tokens": -10**15}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": -1}, "max_completion_tokens"),
    ({"max_tokens": 2**64}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"n": 0}, "n"), ({"n": 129}, "n"), ({"n": True}, "n"), ({"n": 2**64}, "n"),
    ({"top_logprobs": 21}, "top_logprobs"), ({"top_logprobs": -1}, "top_logprobs"),
    ({"top_logprobs": 2**64}, "top_logprobs"),
    ({"temperature": 2.5}, "temperature"), ({"temperature": -0.1}, "temperature"),
    ({"temperature": "hot"}, "temperature"), ({"top_p": 1.01}, "top_p"),
    ({"presence_penalty": 3}, "presence_penalty"), ({"seed": 2**63}, "seed"),
    ({"stream": "yes"}, "stream"), ({"stream_options": "x"}, "stream_options"),
    ({"logprobs": 1}, "logprobs"), ({"logit_bias": [1]}, "logit_bias"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"), ({"logit_bias": {"1": 101}}, "logit_bias"),
    ({"logit_bias": {"99999999999": 1}}, "logit_bias"), ({"logit_bias": {"1": "x"}}, "logit_bias"),
    ({"stop": ["a"] * 5}, "stop"), ({"stop": [1]}, "stop"), ({"user": 5}, "user"),
    ({"model": "m\u0000"}, "model"), ({"model": "x" * 300}, "model"), ({"model": ""}, "model"),
    ({"model": 7}, "model"), ({"messages": "hi"}, "messages"), ({"messages": []}, "messages"),
    ({"messages": ["hi"]}, "messages"),
])
def test_chat_parameters_out_of_type_or_range_are_a_400_naming_them(
    fields: dict[str, Any], param: str
) -> None:
    assert _refusal(CHAT, _chat(**fields)).param == param


@pytest.mark.parametrize("name", ["prompt_logprobs", "allowed_token_ids", "logits_processors",
                                  "vllm_xargs", "priority", "request_id"])
def test_upstream_extensions_that_bypass_controls_are_refused(name: str) -> None:
    error = _refusal(CHAT, _chat(**{name: 1}))
    assert (error.param, error.code) == (name, "parameter_not_allowed")


@pytest.mark.parametrize("name", ["ec_transfer_params", "logprob_token_ids",
                                  "prompt_logprob_token_ids", "extra_args", "echo"])
def test_vllm_extensions_that_read_logprobs_or_carry_the_watermark_are_refused_on_chat(
        name: str) -> None:
    """vLLM 0.32: logprobs of caller-chosen token ids pass the top_logprobs cap; chat ``echo``
    with ``logprobs`` returns the prompt's logprobs beside the choices."""
    error = _refusal(CHAT, _chat(**{name: True, "logprobs": True}))
    assert (error.param, error.code) == (name, "parameter_not_allowed")


def test_echo_stays_legitimate_on_the_completions_route_without_logprobs() -> None:
    params = validate(COMPLETIONS, {"model": "m", "prompt": "p", "echo": True, "max_tokens": 5})
    assert params.max_tokens == 5 and not params.logprobs


@pytest.mark.parametrize("logprobs", [1, 5, 20])
def test_echo_with_logprobs_is_refused_on_completions(logprobs: int) -> None:
    """Top-k logprobs of every position of an attacker-written prompt, for the price of one
    token: logit extraction without generation."""
    error = _refusal(COMPLETIONS, {"model": "m", "prompt": "p", "echo": True,
                                   "logprobs": logprobs})
    assert (error.param, error.code) == ("echo", "parameter_not_allowed")


@pytest.mark.parametrize(("route", "payload", "param"), [
    (COMPLETIONS, {"model": "m", "prompt": "p", "logprobs": 21}, "logprobs"),
    (COMPLETIONS, {"model": "m", "prompt": "p", "max_tokens": -1}, "max_tokens"),
    (COMPLETIONS, {"model": "m", "prompt": "p", "best_of": 0}, "best_of"),
    (RESPONSES, {"model": "m", "input": "p", "max_output_tokens": -5}, "max_output_tokens"),
    (RESPONSES, {"model": "m", "input": "p", "top_logprobs": 99}, "top_logprobs"),
    (RESPONSES, {"model": "m", "input": "p", "instructions": 3}, "instructions"),
    (EMBEDDINGS, {"model": "m"}, "input"),
    (EMBEDDINGS, {"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
])
def test_every_route_has_its_own_ranges(route: str, payload: dict[str, Any], param: str) -> None:
    assert _refusal(route, payload).param == param


def test_parameters_that_matter_for_abuse_are_read() -> None:
    params = validate(CHAT, _chat(
        stream=True, max_tokens=7, n=2, temperature=0.5, logprobs=True, top_logprobs=5,
        logit_bias={"1": 10, "2": -100}, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "sys"},
                  {"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    ))
    assert (params.stream, params.max_tokens, params.n, params.temperature) == (True, 7, 2, 0.5)
    assert (params.logprobs, params.top_logprobs, params.logit_bias_size) == (True, 5, 2)
    assert (params.prompt, params.asks_usage) == ("sys\nhello", True)


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert validate(CHAT, _chat(max_tokens=9, max_completion_tokens=3)).max_tokens == 3


def test_completions_logprobs_is_the_top_k_count() -> None:
    params = validate(COMPLETIONS, {"model": "m", "prompt": "p", "logprobs": 3})
    assert (params.logprobs, params.top_logprobs, params.prompt) == (True, 3, "p")


def test_responses_read_instructions_input_and_output_budget() -> None:
    params = validate(RESPONSES, {
        "model": "m", "instructions": "be brief", "max_output_tokens": 40, "top_logprobs": 2,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "why?"}]}],
    })
    assert (params.prompt, params.max_tokens, params.logprobs, params.top_logprobs) == (
        "be brief\nwhy?", 40, True, 2)


def test_nesting_beyond_the_limit_is_refused_without_recursion() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    error = _refusal(CHAT, _chat(messages=[{"role": "user", "content": deep}]))
    assert (error.param, error.code) == ("body", "too_deep")
    check_depth([[[]]], limit=MAX_DEPTH)  # shallow is fine


def test_accepted_payloads_can_always_be_reencoded() -> None:
    deep: Any = {"a": 1}
    for _ in range(MAX_DEPTH - 2):
        deep = {"a": deep}
    payload = _chat(tools=[deep])
    with pytest.raises(GatewayError):
        validate(CHAT, payload)  # MAX_DEPTH + 1 levels
    payload = _chat(tools=deep["a"])
    validate(CHAT, payload)
    orjson.dumps(payload)  # orjson's own limit is 255: accepted bodies stay re-encodable


def test_flatten_reads_parts_in_document_order_iteratively() -> None:
    assert flatten(["a", {"text": "b"}, [{"content": [{"text": "c"}]}], 4, None]) == "a\nb\nc\n4"
    nested: Any = "z"
    for _ in range(10_000):
        nested = [nested]
    assert flatten(nested) == "z"


def test_completions_reserve_for_every_sequence_generated() -> None:
    params = validate(COMPLETIONS, {"model": "m", "prompt": "p", "n": 2, "best_of": 5})
    assert (params.n, params.sequences) == (2, 5)
    assert validate(CHAT, _chat(n=3)).sequences == 3
    # best_of means nothing to chat: passed through unread, whatever its type (found by the fuzzer)
    assert validate(CHAT, _chat(best_of="x")).sequences == 1


ANY_FIELD = sorted({name for spec in ROUTE_SPECS.values() for name in spec}
                   | {"stop", "messages", "prompt", "input", "response_format", "tool_choice",
                      "text", "background", "tools", "documents", "bad_words"})
HOSTILE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4),
                    st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=400, deadline=None)
@given(route=st.sampled_from(sorted(ROUTE_SPECS)),
       fields=st.dictionaries(st.sampled_from(ANY_FIELD), HOSTILE, max_size=4))
def test_any_field_of_any_route_is_a_400_or_a_typed_value_never_a_crash(
    route: str, fields: dict[str, Any]
) -> None:
    """Found by the proxy fuzzer: fields of another route's table (``n`` on responses,
    ``logit_bias`` on embeddings) must pass unread instead of reaching arithmetic."""
    payload = {**{"model": "m", "messages": MESSAGES, "prompt": "p", "input": "i"}, **fields}
    try:
        params = validate(route, payload)
    except GatewayError as error:
        assert error.status == 400
        return
    assert params.n is None or isinstance(params.n, int)
    assert params.top_logprobs is None or isinstance(params.top_logprobs, int)
    assert isinstance(params.sequences, int) and params.sequences >= 1
    assert params.max_tokens is None or params.max_tokens >= 1
    assert isinstance(params.prompt, str)


# --- an attacker review (2026-11-29): fields that multiply, shape or hide what is generated ---

def test_a_completions_batch_reserves_for_every_prompt() -> None:
    """vLLM answers each prompt of a batch with ``n`` choices: 1,024 prompts once reserved
    what one did."""
    batch = validate(COMPLETIONS, {"model": "m", "prompt": ["a", "b", "c"], "n": 2})
    assert batch.sequences == 6
    ids = validate(COMPLETIONS, {"model": "m", "prompt": [[1, 2], [3], [4]], "best_of": 3})
    assert ids.sequences == 9
    assert validate(COMPLETIONS, {"model": "m", "prompt": [1, 2, 3]}).sequences == 1  # token ids
    assert validate(CHAT, _chat(prompt=["a", "b"], n=2)).sequences == 2  # chat has no batch


@pytest.mark.parametrize(("prompt", "code"), [
    (["p"] * (MAX_PROMPTS + 1), "out_of_range"), (["a", [1]], "invalid_request_error"),
    (["a", 1], "invalid_request_error"), ([[1], "a"], "invalid_request_error"),
])
def test_oversized_or_mixed_batches_are_refused(prompt: list[Any], code: str) -> None:
    error = _refusal(COMPLETIONS, {"model": "m", "prompt": prompt})
    assert error.param == "prompt"
    assert code in (error.code, error.type)


def test_background_responses_are_refused() -> None:
    """Answered at once without usage, generating on with its concurrency slot released."""
    assert _refusal(RESPONSES, {"model": "m", "input": "hi", "background": True}).param \
        == "background"
    validate(RESPONSES, {"model": "m", "input": "hi", "background": False})


def test_what_a_chat_template_renders_is_read_as_prompt_text() -> None:
    """Instructions in tool descriptions, tool-call arguments, documents or tool outputs reach
    the model; they must reach the record and the detector too. An image's data does not."""
    params = validate(CHAT, {"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "data:AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "f", "arguments": "{\"q\": \"ARGUMENT\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "TOOL RESULT"}],
        "tools": [{"type": "function", "function": {"name": "f", "description": "DESCRIBED"}}],
        "documents": [{"title": "t", "text": "DOCUMENT"}]})
    for part in ("hi", "ARGUMENT", "TOOL RESULT", "DESCRIBED", "DOCUMENT"):
        assert part in params.prompt
    assert "data:AAAA" not in params.prompt
    responses = validate(RESPONSES, {"model": "m", "input": [
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "CALLED"},
        {"type": "function_call_output", "call_id": "c", "output": "OUTPUT"}]})
    assert "CALLED" in responses.prompt and "OUTPUT" in responses.prompt
