"""An OpenAI-compatible upstream whose replies a test scripts through the model name, and which
keeps every request it received (method, path, headers, body) — to prove what reached it.

Model names: ``usage-<n>`` reports ``n`` completion (output) tokens whatever it generated;
``stream-<n>`` streams ``n`` one-token chunks (2 ms apart) before its usage; anything else
reports 3. Requests asking for logprobs get fixed logprobs (-0.5, top -1.0…), so a
test can see whether the gateway perturbed them. Routes: chat, completions, responses (plain and
streamed), embeddings, models, and ``/v1/moderations`` (which the gateway must not forward unless
an operator lists it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

RAW_LOGPROB = -0.5
RAW_TOP = (-0.5, -1.0, -2.0, -3.0, -4.0, -5.0)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


class ScriptedUpstream:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._chat, methods=["POST"]),
            Route("/v1/responses", self._responses, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/moderations", self._moderations, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ], exception_handlers={HTTPException: _http_error})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    async def _record(self, request: Request) -> dict[str, Any]:
        body = await request.body()
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        self.seen.append(Seen(request.method, path, dict(request.headers), body))
        parsed = orjson.loads(body) if body else {}
        return parsed if isinstance(parsed, dict) else {}

    async def _chat(self, request: Request) -> Response:
        body = await self._record(request)
        chat = request.url.path.endswith("/chat/completions")
        top = int(body.get("top_logprobs" if chat else "logprobs") or 0)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": "ok"}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [_entry("ok", top)]}
        else:
            choice["text"] = "ok"
        usage = _usage(body, "prompt_tokens", "completion_tokens")
        payload = {"id": "x", "object": "chat.completion" if chat else "text_completion",
                   "created": 0, "model": body.get("model"), "choices": [choice], "usage": usage}
        if body.get("stream"):
            model = str(body.get("model") or "")
            tokens = int(model[7:]) if model.startswith("stream-") else 1
            delta = {**payload, "usage": None,
                     "choices": [{"index": 0, "delta": {"content": "w "}, "finish_reason": None}]}
            return _sse([delta] * tokens + [{**payload, "choices": [], "usage": usage}],
                        pause_s=0.002 if tokens > 1 else 0.0)
        return _json(payload)

    async def _responses(self, request: Request) -> Response:
        body = await self._record(request)
        top = int(body.get("top_logprobs") or 0)
        part: dict[str, Any] = {"type": "output_text", "text": "ok", "annotations": []}
        if top:
            part["logprobs"] = [_entry("ok", top)]
        response = {
            "id": "resp_1", "object": "response", "created_at": 0, "status": "completed",
            "model": body.get("model"),
            "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                        "status": "completed", "content": [part]}],
            "usage": _usage(body, "input_tokens", "output_tokens"),
        }
        if not body.get("stream"):
            return _json(response)
        delta = {"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
                 "delta": "ok", "logprobs": part.get("logprobs", [])}
        return _sse([{"type": "response.created", "response": {**response, "usage": None}},
                     delta, {"type": "response.completed", "response": response}])

    async def _embeddings(self, request: Request) -> Response:
        body = await self._record(request)
        return _json({"object": "list", "model": body.get("model"),
                      "data": [{"object": "embedding", "index": 0, "embedding": [0.0]}],
                      "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    async def _moderations(self, request: Request) -> Response:
        await self._record(request)
        return _json({"id": "modr", "results": []})

    async def _models(self, request: Request) -> Response:
        await self._record(request)
        return _json({"object": "list", "data": [{"id": "m", "object": "model", "created": 0,
                                                   "owned_by": "test"}]})


def _entry(token: str, top: int) -> dict[str, Any]:
    tops = [{"token": f"t{i}" if i else token, "logprob": RAW_TOP[i], "bytes": None}
            for i in range(min(top, len(RAW_TOP)))]
    return {"token": token, "logprob": RAW_LOGPROB, "bytes": None, "top_logprobs": tops}


def _usage(body: dict[str, Any], prompt_name: str, completion_name: str) -> dict[str, int]:
    model = str(body.get("model") or "")
    completion = (int(model[6:]) if model.startswith("usage-")
                  else int(model[7:]) if model.startswith("stream-") else 3)
    return {prompt_name: 2, completion_name: completion, "total_tokens": 2 + completion}


async def _http_error(_: Request, exc: Exception) -> Response:
    """Like an OpenAI-compatible server: unknown routes and methods get the error shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    body = {"error": {"message": "not served here", "type": "invalid_request_error",
                      "param": None, "code": None}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _json(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


def _sse(events: list[dict[str, Any]], pause_s: float = 0.0) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for event in events:
            yield b"data: " + orjson.dumps(event) + b"\n\n"
            if pause_s:
                await asyncio.sleep(pause_s)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")
