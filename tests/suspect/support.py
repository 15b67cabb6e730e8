"""Simulated suspects for the statistics tests: text whose tokens are pushed onto a key's
green list with a chosen probability (numpy only, no model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.suspect.client import Reply
from gateway.watermark.hashing import context_hash, green_threshold, mix, step_seed, token_hash

ASCII = np.arange(32, 127, dtype=np.int64)  # printable: replies round-trip as text
WIDTH = 2
GAMMA = 0.25


def docstring_bytes() -> list[int]:
    """Real, repetitive, unwatermarked text: the stdlib's docstring openings as bytes."""
    from gateway.suspect.prompts import stdlib_openings

    return list("\n".join(stdlib_openings(24)).encode())


def biased_text(rng: np.random.Generator, length: int, keys: Sequence[tuple[int, int]],
                bias: float, start: Sequence[int] = (65, 66)) -> list[int]:
    """``length`` printable bytes after ``start``: each uniform at random, except that with
    probability ``bias`` it is drawn from the green list of one of ``keys`` (chosen at random
    per token)."""
    out = list(start)
    vocab = ASCII
    hashed = token_hash(vocab)
    threshold = green_threshold(GAMMA)
    for _ in range(length):
        if keys and rng.random() < bias:
            hi, lo = keys[int(rng.integers(len(keys)))]
            ctx = context_hash(np.array([out[-WIDTH:]], np.int64), WIDTH)[0]
            green = vocab[mix(step_seed(hi, lo, ctx) ^ hashed) < threshold]
            out.append(int(rng.choice(green if len(green) else vocab)))
        else:
            out.append(int(rng.choice(vocab)))
    return out[len(start):]


class SimulatedSuspect:
    """A :class:`gateway.suspect.client.Sampler` answering every prompt with biased text."""

    def __init__(self, keys: Sequence[tuple[int, int]], bias: float, length: int = 200,
                 seed: int = 0) -> None:
        self.keys, self.bias, self.length = list(keys), bias, length
        self.rng = np.random.default_rng(seed)
        self.queries = 0

    async def __call__(self, prompts: Sequence[str]) -> list[Reply]:
        self.queries += len(prompts)
        replies = []
        for prompt in prompts:
            ids = list(prompt.encode())
            replies.append(Reply(ids, biased_text(self.rng, self.length, self.keys, self.bias,
                                                  ids[-WIDTH:])))
        return replies


def suspect_app(keys: Sequence[tuple[int, int]], bias: float, seen: list[dict[str, str]],
                length: int = 200) -> Any:
    """An OpenAI-compatible ``/v1/completions`` serving biased text; records request headers."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    rng = np.random.default_rng(7)

    async def completions(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        body = await request.json()
        prompt = list(str(body["prompt"]).encode())
        text = bytes(biased_text(rng, min(length, int(body["max_tokens"])), keys, bias,
                                 prompt[-WIDTH:])).decode()
        return JSONResponse({"object": "text_completion", "model": body["model"],
                             "choices": [{"index": 0, "text": text, "finish_reason": "length"}]})

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
