"""A small deterministic OpenAI-compatible upstream, for the demo, tests and benchmarks.

It answers from the prompt alone (no model): the same request always gets the same reply, and
token counts are whitespace words, so tests can check exact usage. Model names are knobs:
``slow-<ms>`` waits before answering, ``drip-<ms>`` waits between stream chunks, ``fail`` answers
500. A harness replaying real traffic may script reply lengths (``create_echo_app(lengths)``):
a prompt found there is answered with that many words, as the real model answered it, so that
what the detector sees of a replayed profile is the profile and not the echo's 8-23 words.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

MODEL_ID = "echo-1"
WORDS = (
    "the model answers every question with a short and careful reply that repeats some of "
    "your words back in a different order so that tests can count tokens exactly"
).split()


def reply_words(prompt: str, max_tokens: int | None, index: int = 0,
                length: int | None = None) -> list[str]:
    """The reply: ``length`` words (8-23 chosen by the prompt when None), cut to
    ``max_tokens``."""
    seed = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    if length is None:
        length = 8 + seed[0] % 16
    if max_tokens is not None:
        length = min(length, max_tokens)
    source = prompt.split() + WORDS
    return [source[(seed[i % 32] + i) % len(source)] for i in range(length)]


def count_tokens(text: str) -> int:
    return len(text.split())


def json_response(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def error(status: int, message: str) -> Response:
    return json_response(
        {"error": {"message": message, "type": "invalid_request_error", "param": None,
                   "code": None}}, status,
    )


async def models(_: Request) -> Response:
    return json_response({"object": "list", "data": [
        {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "gateway"}]})


async def _knobs(model: str) -> Response | None:
    if model == "fail":
        return error(500, "upstream failure requested")
    if model.startswith("slow-"):
        await asyncio.sleep(int(model[5:]) / 1000)
    return None


def _chat_prompt(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content") or "") for m in body.get("messages", []))


async def chat_completions(request: Request) -> Response:
    return await _complete(request, chat=True)


async def completions(request: Request) -> Response:
    return await _complete(request, chat=False)


async def _complete(request: Request, *, chat: bool) -> Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return error(400, "invalid JSON")
    model = str(body.get("model", MODEL_ID))
    failure = await _knobs(model)
    if failure is not None:
        return failure
    prompt = _chat_prompt(body) if chat else str(body.get("prompt", ""))
    n = int(body.get("n") or 1)
    length = request.app.state.lengths.get(prompt)
    choices = [reply_words(prompt, body.get("max_tokens"), i, length) for i in range(n)]
    usage = {
        "prompt_tokens": count_tokens(prompt),
        "completion_tokens": sum(len(c) for c in choices),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    created = int(time.time())
    rid = ("chatcmpl-" if chat else "cmpl-") + hashlib.sha256(prompt.encode()).hexdigest()[:20]
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        delay = int(model[5:]) / 1000 if model.startswith("drip-") else 0.0
        events = _stream(rid, model, created, choices, usage, include_usage, chat, delay)
        return StreamingResponse(events, media_type="text/event-stream")
    return json_response({
        "id": rid, "object": "chat.completion" if chat else "text_completion",
        "created": created, "model": model, "usage": usage,
        "choices": [_choice(i, words, chat) for i, words in enumerate(choices)],
    })


def _choice(index: int, words: list[str], chat: bool) -> dict[str, Any]:
    text = " ".join(words)
    if chat:
        return {"index": index, "finish_reason": "stop", "logprobs": None,
                "message": {"role": "assistant", "content": text}}
    return {"index": index, "finish_reason": "stop", "logprobs": None, "text": text}


async def _stream(
    rid: str, model: str, created: int, choices: list[list[str]], usage: dict[str, int],
    include_usage: bool, chat: bool, delay: float,
) -> AsyncIterator[bytes]:
    kind = "chat.completion.chunk" if chat else "text_completion"
    base: dict[str, Any] = {"id": rid, "object": kind, "created": created, "model": model}
    if include_usage:
        base["usage"] = None
    for position in range(max(len(c) for c in choices)):
        for index, words in enumerate(choices):
            if position >= len(words):
                continue
            piece = (" " if position else "") + words[position]
            last = position == len(words) - 1
            choice: dict[str, Any] = {"index": index, "finish_reason": "stop" if last else None}
            if chat:
                delta = {"content": piece}
                if not position:
                    delta["role"] = "assistant"
                choice["delta"] = delta
            else:
                choice["text"] = piece
            yield b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"
        if delay:
            await asyncio.sleep(delay)
    if include_usage:
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def embeddings(request: Request) -> Response:
    body = orjson.loads(await request.body())
    inputs = body.get("input", "")
    texts = inputs if isinstance(inputs, list) else [inputs]
    data = []
    for i, text in enumerate(texts):
        digest = hashlib.sha256(str(text).encode()).digest()
        data.append({"object": "embedding", "index": i,
                     "embedding": [(b - 128) / 128 for b in digest[:16]]})
    tokens = sum(count_tokens(str(t)) for t in texts)
    return json_response({"object": "list", "data": data, "model": body.get("model", MODEL_ID),
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def create_echo_app(lengths: Mapping[str, int] | None = None) -> Starlette:
    """The upstream; ``lengths`` scripts reply lengths by prompt (the chat prompt is the
    messages' contents joined by newlines). The caller may keep adding to it while serving."""
    app = Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ])
    app.state.lengths = lengths if lengths is not None else {}
    return app
