"""Request and response bodies for ``proxy_overhead.py``, and checks that a response is right.

The static upstream (nginx) answers every POST /v1/chat/completions with one of two fixed
bodies: a ~600-byte JSON chat completion with a ``usage`` object, or an SSE stream of 20
``chat.completion.chunk`` events (the last one carrying ``usage``) followed by ``data: [DONE]``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

Workload = Literal["json", "sse"]
WORKLOADS: tuple[Workload, ...] = ("json", "sse")
CONTENT_TYPES: dict[Workload, str] = {"json": "application/json", "sse": "text/event-stream"}

MODEL = "bench-model"
CREATED = 1_735_000_000
SSE_EVENTS = 20
_ANSWER = (
    "Proxies add latency in three places: parsing the request, waiting on the pooled upstream "
    "connection, and copying the response back. This reply is fixed so that only the proxy "
    "varies between runs, and so that its size stays close to a typical short completion."
)
_WORDS = [
    "Proxies", " add", " latency", " in", " three", " places:", " parsing,", " pooling,",
    " and", " copying", " the", " response", " back", " to", " the", " client", ".", " Done",
]


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def request_body(workload: Workload) -> bytes:
    """The JSON body wrk POSTs: a short chat request, streaming for the SSE workload."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Where does a reverse proxy add latency?"},
        ],
        "max_tokens": 64,
        "temperature": 0,
    }
    if workload == "sse":
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return _compact(body).encode()


def _usage() -> dict[str, int]:
    return {"prompt_tokens": 24, "completion_tokens": 38, "total_tokens": 62}


def json_completion() -> bytes:
    """A non-streaming chat completion of about 600 bytes."""
    body = {
        "id": "chatcmpl-bench0000000000000000000001",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _ANSWER},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(),
    }
    return _compact(body).encode()


def _chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
    body: dict[str, Any] = {
        "id": "chatcmpl-bench0000000000000000000002",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {_compact(body)}\n\n"


def sse_stream() -> bytes:
    """20 chunk events (18 content deltas, a finish chunk, a usage chunk), then [DONE]."""
    events = []
    for i, word in enumerate(_WORDS):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
        events.append(_chunk([{"index": 0, "delta": delta, "finish_reason": None}]))
    events.append(_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    events.append(_chunk([], usage=_usage()))
    assert len(events) == SSE_EVENTS
    return ("".join(events) + "data: [DONE]\n\n").encode()


def response_body(workload: Workload) -> bytes:
    return json_completion() if workload == "json" else sse_stream()


def _check_json(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        return f"body is not JSON: {exc}"
    if parsed.get("object") != "chat.completion" or "usage" not in parsed:
        return "JSON body is not a chat completion with usage"
    return None


def _check_sse(body: bytes) -> str | None:
    events = [e for e in body.decode(errors="replace").split("\n\n") if e.strip()]
    if not events or events[-1].strip() != "data: [DONE]":
        return "SSE stream does not end with data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    if len(chunks) < SSE_EVENTS or "usage" not in chunks[-1]:
        return f"SSE stream has {len(chunks)} chunk events or no final usage chunk"
    return None


def check_response(
    workload: Workload, status: int, content_type: str, body: bytes, exact: bool
) -> str | None:
    """None when the response is right; otherwise what is wrong with it.

    ``exact`` demands the upstream's bytes unchanged (pass-throughs); the gateway may rewrite
    content (watermarking), so for it only the shape is checked.
    """
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    if not content_type.startswith(CONTENT_TYPES[workload]):
        return f"content-type {content_type!r}, expected {CONTENT_TYPES[workload]!r}"
    if exact and body != response_body(workload):
        return f"body differs from the upstream's ({len(body)} bytes): {body[:200]!r}"
    try:
        return _check_json(body) if workload == "json" else _check_sse(body)
    except ValueError as exc:
        return f"malformed body: {exc}"
