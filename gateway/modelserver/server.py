"""The reference OpenAI-compatible model server: ``/v1/chat/completions``, ``/v1/completions``
(streaming or not, ``n``, ``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``logprobs``,
``top_logprobs``, ``logit_bias``, ``seed``) and ``/v1/models`` around a transformers causal LM,
watermarking each account's text with that account's key.

Every request must carry the gateway's signature of that exact request (see
:mod:`gateway.upstream_identity.signature`), checked against the raw method, path, query and body
before anything is parsed; unsigned, badly signed or replayed ones get an OpenAI-shaped 401, and
a 503 when the replay memory (:mod:`gateway.modelserver.replay`) cannot record the nonce. Only
with ``allow_unsigned`` (tests, local experiments) is an unsigned request served, unmarked.

A client that disconnects stops the engine's work on its request at once, streamed or not, so
the gateway's concurrency limits bound model work.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.modelserver.config import ServerConfig
from gateway.modelserver.decoder import BatchDecoder, Sequence
from gateway.modelserver.openai_shapes import (
    BadRequest,
    Params,
    chat_logprob_entry,
    json_response,
    legacy_logprobs,
    parse,
)
from gateway.modelserver.replay import RedisNonces
from gateway.tokenizer.core import Tokenizer, load_tokenizer
from gateway.upstream_identity.signature import (
    SIGNATURE_HEADER,
    InProcessNonces,
    NonceStore,
    ReplayCacheUnavailable,
    VerificationError,
    Verifier,
)
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor

log = logging.getLogger("gateway.modelserver")
Item = tuple[int, float, list[tuple[int, float]]] | None
T = TypeVar("T")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(config: ServerConfig, device: torch.device) -> tuple[Any, Tokenizer, int]:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(str(config.model_dir), dtype=torch.float32)
    model.to(device).eval()
    window = int(getattr(model.config, "n_positions", 0)
                 or getattr(model.config, "max_position_embeddings", 2048))
    return model, load_tokenizer(config.model_dir), window


@dataclass
class Choice:
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list[list[tuple[int, float]]] = field(default_factory=list)
    done: bool = False


class ModelServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self.model, self.tokenizer, self.window = load_model(config, self.device)
        vocab = int(self.model.config.vocab_size)
        self.vocab = vocab
        processor = None
        if config.watermark_secret is not None:
            processor = WatermarkProcessor(config.watermark, vocab, self.device,
                                           compile=config.watermark_compile)
        else:
            log.warning("GATEWAY_WATERMARK_SECRET is not set: generations are not watermarked")
        self.engine = BatchDecoder(self.model, self.tokenizer.eos_id, self.window, processor,
                             self.device, config.max_batch)
        self.nonces = _nonce_store(config)
        self.verifier = (Verifier(config.signing_secret, config.signature_max_age_s,
                                  self.nonces) if config.signing_secret else None)

    # --- auth ------------------------------------------------------------------------------

    async def account_key(self, request: Request, body: bytes) -> tuple[int, int] | None:
        """The watermark key of the account the gateway signed this exact request for (its
        method, raw path and query, and ``body``), or None for a permitted unsigned one."""
        if self.verifier is None:
            if self.config.allow_unsigned:
                return None
            raise BadRequest("This model server only serves requests signed by the gateway.",
                             status=401, code="unsigned_request", type="authentication_error")
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            account = await self.verifier.verify(headers, request.method,
                                                 _target(request.scope), body)
        except VerificationError as exc:
            if self.config.allow_unsigned and SIGNATURE_HEADER not in headers:
                return None
            raise BadRequest(f"Request refused: {exc}.", status=401, code="unsigned_request",
                             type="authentication_error") from None
        except ReplayCacheUnavailable:
            raise BadRequest("Request refused: the replay cache cannot record it; retry.",
                             status=503, code="replay_cache_unavailable",
                             type="server_error") from None
        if self.config.watermark_secret is None:
            return None
        return derive_key(self.config.watermark_secret, account)

    # --- generation ------------------------------------------------------------------------

    def start(self, params: Params, key: tuple[int, int] | None,
              queue: asyncio.Queue[tuple[int, Item]]) -> tuple[list[int], list[Sequence]]:
        prompt = self.tokenizer.encode(params.prompt)
        if not prompt:
            prompt = [self.tokenizer.eos_id]
        sequences = []
        for index in range(params.n):
            generator = None
            if params.seed is not None:
                generator = torch.Generator().manual_seed(params.seed * 1009 + index)
            sequences.append(Sequence(
                prompt=prompt, max_tokens=params.max_tokens, temperature=params.temperature,
                top_p=params.top_p, top_logprobs=params.top_logprobs if params.logprobs else 0,
                bias=params.logit_bias, key=key, generator=generator,
                emit=_emitter(queue, index),
                stop=self._stopper(params.stop),
            ))
        for sequence in sequences:
            self.engine.submit(sequence)
        return prompt, sequences

    def _stopper(self, stops: list[str]) -> Any:
        if not stops:
            return lambda _: False
        longest = max(len(s.encode()) for s in stops) + 8
        decode = self.tokenizer.decode
        return lambda ids: any(s in decode(ids[-longest * 4:]) for s in stops)

    def text_of(self, tokens: list[int], stops: list[str], final: bool) -> tuple[str, bool]:
        """Decoded text cut at the first stop string; while not ``final``, text that might still
        become a stop string or an incomplete character is held back."""
        text = self.tokenizer.decode(tokens)
        cut = [text.index(s) for s in stops if s in text]
        if cut:
            return text[:min(cut)], True
        if not final:
            hold = max((len(s) - 1 for s in stops), default=0)
            text = text.rstrip("\ufffd")
            text = text[:len(text) - hold] if hold else text
        return text, False


def _nonce_store(config: ServerConfig) -> NonceStore:
    """Redis when configured, so that every model server refuses a request any one has served;
    otherwise this process's own memory."""
    if config.redis_url:
        return RedisNonces(config.redis_url)
    return InProcessNonces(config.replay_cache_size)


def _target(scope: Scope) -> str:
    """The request line's path and query, still percent-encoded: what the gateway signed."""
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return (path + b"?" + query if query else path).decode("latin-1")


def _emitter(queue: asyncio.Queue[tuple[int, Item]], index: int) -> Callable[[Item], None]:
    def emit(item: Item) -> None:
        queue.put_nowait((index, item))

    return emit


def _rid(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def create_model_server_app(config: ServerConfig | None = None) -> Starlette:
    server = ModelServer(config or ServerConfig.from_env())

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        server.engine.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            server.engine.stop()
            await server.nonces.aclose()

    async def models(_: Request) -> Response:
        return json_response({"object": "list", "data": [
            {"id": server.config.model_name, "object": "model", "created": 0,
             "owned_by": "gateway"}]})

    async def healthz(_: Request) -> Response:
        return json_response({"status": "ok"})

    async def chat(request: Request) -> Response:
        return await _complete(server, request, chat=True)

    async def completions(request: Request) -> Response:
        return await _complete(server, request, chat=False)

    app = Starlette(lifespan=lifespan, routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])
    app.state.server = server
    return app


async def _complete(server: ModelServer, request: Request, *, chat: bool) -> Response:
    try:
        raw = await request.body()
        key = await server.account_key(request, raw)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("The request body is not valid JSON.", code="invalid_json") from None
        params = parse(body, chat=chat, vocab=server.vocab)
    except BadRequest as error:
        return error.response()
    model = str(body.get("model") or server.config.model_name)
    queue: asyncio.Queue[tuple[int, Item]] = asyncio.Queue()
    prompt, sequences = server.start(params, key, queue)
    meta = {"id": _rid(chat), "created": int(time.time()), "model": model}
    if params.stream:
        return _GenerationStream(_stream(server, params, prompt, queue, meta),
                                 sequences)
    try:
        choices = await _unless_disconnected(_collect(params.n, queue), request.receive)
    finally:
        _cancel(sequences)
    if choices is None:
        return Response(status_code=499)  # nobody is left to read it
    return json_response(_final(server, params, prompt, choices, meta))


def _cancel(sequences: list[Sequence]) -> None:
    """Tells the engine to drop ``sequences`` before its next step (no-op once they are done)."""
    for sequence in sequences:
        sequence.cancelled = True


class _GenerationStream(StreamingResponse):
    """An event stream that cancels its sequences however the response ends — finished, or cut
    short because the client went away — so the engine never generates for nobody."""

    def __init__(self, content: AsyncIterator[bytes], sequences: list[Sequence]) -> None:
        super().__init__(content, media_type="text/event-stream")
        self._sequences = sequences

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            _cancel(self._sequences)


async def _unless_disconnected(work: Awaitable[T], receive: Receive) -> T | None:
    """``work``'s result, or None as soon as the client disconnects. A non-streamed reply sends
    nothing while it waits, so only the request channel can tell that the client has gone."""
    working = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((working, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        working.cancel()
        watching.cancel()
    return working.result() if working.done() and not working.cancelled() else None


async def _disconnected(receive: Receive) -> None:
    """Returns once the ASGI server reports ``http.disconnect`` (the body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _collect(n: int, queue: asyncio.Queue[tuple[int, Item]]) -> list[Choice]:
    choices = [Choice() for _ in range(n)]
    remaining = n
    while remaining:
        index, item = await queue.get()
        if item is None:
            choices[index].done = True
            remaining -= 1
            continue
        token, logprob, top = item
        choices[index].tokens.append(token)
        choices[index].logprobs.append(logprob)
        choices[index].tops.append(top)
    return choices


def _finish_reason(server: ModelServer, params: Params, choice: Choice) -> str:
    _, stopped = server.text_of(choice.tokens, params.stop, final=True)
    if stopped or len(choice.tokens) < params.max_tokens:
        return "stop"
    return "length"


def _usage(prompt: list[int], completion: int) -> dict[str, int]:
    return {"prompt_tokens": len(prompt), "completion_tokens": completion,
            "total_tokens": len(prompt) + completion}


def _final(server: ModelServer, params: Params, prompt: list[int], choices: list[Choice],
           meta: dict[str, Any]) -> dict[str, Any]:
    out = []
    tok = server.tokenizer
    for index, choice in enumerate(choices):
        text, _ = server.text_of(choice.tokens, params.stop, final=True)
        logprobs: Any = None
        if params.logprobs and params.chat:
            logprobs = {"content": [chat_logprob_entry(tok, t, lp, top) for t, lp, top in zip(
                choice.tokens, choice.logprobs, choice.tops, strict=True)], "refusal": None}
        elif params.logprobs:
            logprobs = legacy_logprobs(tok, choice.tokens, choice.logprobs, choice.tops, 0)
        entry: dict[str, Any] = {"index": index, "logprobs": logprobs,
                                 "finish_reason": _finish_reason(server, params, choice)}
        if params.chat:
            entry["message"] = {"role": "assistant", "content": text, "refusal": None}
        else:
            entry["text"] = text
        out.append(entry)
    return {**meta, "object": "chat.completion" if params.chat else "text_completion",
            "choices": out, "usage": _usage(prompt, sum(len(c.tokens) for c in choices)),
            "system_fingerprint": _fingerprint(server)}


def _fingerprint(server: ModelServer) -> str:
    return "fp_" + hashlib.sha256(str(server.config.model_dir).encode()).hexdigest()[:10]


async def _stream(server: ModelServer, params: Params, prompt: list[int],
                  queue: asyncio.Queue[tuple[int, Item]], meta: dict[str, Any]
                  ) -> AsyncIterator[bytes]:
    kind = "chat.completion.chunk" if params.chat else "text_completion"
    base = {**meta, "object": kind, "system_fingerprint": _fingerprint(server)}
    if params.include_usage:
        base["usage"] = None
    choices = [Choice() for _ in range(params.n)]
    sent = [0] * params.n
    remaining = params.n
    tok = server.tokenizer
    if params.chat:
        for i in range(params.n):
            first = {"index": i, "delta": {"role": "assistant", "content": ""},
                     "logprobs": None, "finish_reason": None}
            yield _event({**base, "choices": [first]})
    while remaining:
        index, item = await queue.get()
        choice = choices[index]
        logprobs: Any = None
        if item is None:
            choice.done = True
            remaining -= 1
        else:
            token, logprob, top = item
            choice.tokens.append(token)
            choice.logprobs.append(logprob)
            choice.tops.append(top)
            if params.logprobs and params.chat:
                logprobs = {"content": [chat_logprob_entry(tok, token, logprob, top)],
                            "refusal": None}
            elif params.logprobs:
                logprobs = legacy_logprobs(tok, [token], [logprob], [top], sent[index])
        text, _ = server.text_of(choice.tokens, params.stop, final=choice.done)
        delta, sent[index] = text[sent[index]:], max(sent[index], len(text))
        reason = _finish_reason(server, params, choice) if choice.done else None
        entry: dict[str, Any] = {"index": index, "logprobs": logprobs,
                                 "finish_reason": reason}
        if params.chat:
            entry["delta"] = {"content": delta} if (delta or reason is None) else {}
        else:
            entry["text"] = delta
        yield _event({**base, "choices": [entry]})
    if params.include_usage:
        usage = _usage(prompt, sum(len(c.tokens) for c in choices))
        yield _event({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
