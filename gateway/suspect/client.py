"""Sampling the suspect over its OpenAI-compatible API (``/completions`` or
``/chat/completions``), with aiohttp (the gateway's HTTP client).

Every request is time-boxed (``timeout_s``), refuses redirects, and reads at most
``max_response_bytes``; the only header of ours is the suspect's own bearer key (never a
gateway secret). Replies are tokenised with the served model's tokenizer (the byte tokenizer of
the shipped model): a completion is scored in the context of its prompt, a chat reply from its
first token (the chat template is the suspect's, unknown to us).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from gateway.suspect.target import PublicOnlyResolver, Target
from gateway.tokenizer.core import ByteTokenizer, Tokenizer


@dataclass(frozen=True, slots=True)
class Reply:
    """Token ids of what we sent (the context of the first reply tokens) and of the reply."""

    prompt_ids: list[int]
    reply_ids: list[int]


class Sampler(Protocol):
    """Answers a batch of prompts; a reply that failed is absent (fewer replies than prompts)."""

    async def __call__(self, prompts: Sequence[str]) -> list[Reply]:
        ...


class SuspectUnavailable(RuntimeError):
    """The suspect failed too often; the message holds no reply content."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    concurrency: int = 4
    timeout_s: float = 120.0
    max_response_bytes: int = 1 << 20


class HttpSampler:
    """A :class:`Sampler` over HTTP; use as an async context manager."""

    def __init__(self, target: Target, params: SamplingParams,
                 tokenizer: Tokenizer | None = None) -> None:
        self.target = target
        self.params = params
        self.tokenizer = tokenizer or ByteTokenizer()
        self.failures = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpSampler:
        headers = {"Content-Type": "application/json"}
        if self.target.api_key:
            headers["Authorization"] = f"Bearer {self.target.api_key}"
        connector = None if self.target.allow_private_network else aiohttp.TCPConnector(
            resolver=PublicOnlyResolver())
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.params.timeout_s),
            trust_env=False, connector=connector)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _request(self, prompt: str) -> tuple[str, dict[str, Any]]:
        base = self.target.base_url.rstrip("/")
        common = {"model": self.target.model, "max_tokens": self.params.max_tokens,
                  "temperature": self.params.temperature, "n": 1, "stream": False}
        if self.target.endpoint == "chat":
            return base + "/chat/completions", {
                **common, "messages": [{"role": "user", "content": prompt}]}
        return base + "/completions", {**common, "prompt": prompt}

    async def _one(self, prompt: str) -> Reply | None:
        assert self._session is not None, "use HttpSampler as an async context manager"
        url, body = self._request(prompt)
        try:
            async with self._session.post(url, json=body, allow_redirects=False) as response:
                raw = await response.content.read(self.params.max_response_bytes + 1)
                if response.status != 200 or len(raw) > self.params.max_response_bytes:
                    return None
            choice = json.loads(raw)["choices"][0]
            text = (choice["message"]["content"] if self.target.endpoint == "chat"
                    else choice["text"])
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError, TypeError):
            return None
        if not isinstance(text, str):
            return None
        prompt_ids = [] if self.target.endpoint == "chat" else self.tokenizer.encode(prompt)
        return Reply(prompt_ids, self.tokenizer.encode(text))

    async def __call__(self, prompts: Sequence[str]) -> list[Reply]:
        gate = asyncio.Semaphore(self.params.concurrency)

        async def bounded(prompt: str) -> Reply | None:
            async with gate:
                return await self._one(prompt)

        replies = await asyncio.gather(*(bounded(p) for p in prompts))
        self.failures += sum(r is None for r in replies)
        return [r for r in replies if r is not None]
