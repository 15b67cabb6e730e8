"""Request parsing and response shapes of the OpenAI API, for the reference model server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response

from gateway.tokenizer.core import Tokenizer, token_text

MAX_TOKENS_LIMIT = 4096
MAX_N = 128


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 code: str | None = None, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code, self.type = (
            message, param, status, code, type)

    def response(self) -> Response:
        return json_response({"error": {"message": self.message, "type": self.type,
                                        "param": self.param, "code": self.code}}, self.status)


def json_response(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@dataclass(frozen=True)
class Params:
    chat: bool
    prompt: str
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    stream: bool
    include_usage: bool
    logprobs: bool
    top_logprobs: int
    logit_bias: dict[int, float]
    seed: int | None


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"'{name}' must be a number in [{low:g}, {high:g}].", name)
    return float(value)


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"'{name}' must be an integer in [{low}, {high}].", name)
    return value


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if (not isinstance(stops, list) or len(stops) > 4
            or not all(isinstance(s, str) and s for s in stops)):
        raise BadRequest("'stop' must be a string or up to 4 non-empty strings.", "stop")
    return list(stops)


def _bias(body: dict[str, Any], vocab: int) -> dict[int, float]:
    bias = body.get("logit_bias")
    if bias is None:
        return {}
    if not isinstance(bias, dict):
        raise BadRequest("'logit_bias' must be an object.", "logit_bias")
    out: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise BadRequest("'logit_bias' keys must be token ids.", "logit_bias") from None
        if not 0 <= token < vocab or isinstance(value, bool) or not isinstance(
                value, int | float) or not -100 <= value <= 100:
            raise BadRequest("'logit_bias' maps token ids to numbers in [-100, 100].",
                             "logit_bias")
        out[token] = float(value)
    return out


def _chat_prompt(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", "messages")
    parts = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise BadRequest("Each message needs a string 'content'.", "messages")
        parts.append(content)
    return "\n".join(parts) + "\n"


def parse(body: Any, *, chat: bool, vocab: int) -> Params:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    if chat:
        prompt = _chat_prompt(body)
        logprobs = body.get("logprobs") or False
        if not isinstance(logprobs, bool):
            raise BadRequest("'logprobs' must be a boolean.", "logprobs")
        top = _int(body, "top_logprobs", 0, 0, 20)
        if top and not logprobs:
            raise BadRequest("'top_logprobs' requires 'logprobs': true.", "top_logprobs")
    else:
        given = body.get("prompt")
        if isinstance(given, list) and len(given) == 1 and isinstance(given[0], str):
            given = given[0]
        if not isinstance(given, str):
            raise BadRequest("'prompt' must be a string.", "prompt")
        prompt = given
        top = _int(body, "logprobs", 0, 0, 20)
        logprobs = body.get("logprobs") is not None
    options = body.get("stream_options") or {}
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("'seed' must be an integer.", "seed")
    max_tokens = _int(body, "max_completion_tokens", 0, 1, MAX_TOKENS_LIMIT) or _int(
        body, "max_tokens", 128, 1, MAX_TOKENS_LIMIT)
    return Params(
        chat=chat, prompt=prompt, n=_int(body, "n", 1, 1, MAX_N), max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0), stop=_stop(body),
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        logprobs=logprobs, top_logprobs=top, logit_bias=_bias(body, vocab), seed=seed,
    )


def chat_logprob_entry(tok: Tokenizer, token: int, logprob: float,
                       top: list[tuple[int, float]]) -> dict[str, Any]:
    return {
        "token": token_text(tok, token), "logprob": logprob,
        "bytes": list(tok.token_bytes(token)),
        "top_logprobs": [{"token": token_text(tok, t), "logprob": lp,
                          "bytes": list(tok.token_bytes(t))} for t, lp in top],
    }


def legacy_logprobs(tok: Tokenizer, tokens: list[int], logprobs: list[float],
                    tops: list[list[tuple[int, float]]], offset: int) -> dict[str, Any]:
    texts = [token_text(tok, t) for t in tokens]
    offsets = []
    for text in texts:
        offsets.append(offset)
        offset += len(text)
    return {"tokens": texts, "token_logprobs": logprobs,
            "top_logprobs": [{token_text(tok, t): lp for t, lp in top} for top in tops],
            "text_offset": offsets}
