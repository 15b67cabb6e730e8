"""Minimal FastAPI + httpx pass-through, measured beside the aiohttp one in ``proxy_overhead.py``.

One pooled ``httpx.AsyncClient``; the request body is forwarded as is, a JSON answer is read
and returned whole, an SSE answer is streamed through chunk by chunk. The upstream base URL
(ending in /v1) comes from ``BENCH_UPSTREAM_URL``. Run with uvicorn, one worker.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8001/v1").rstrip("/")
_client: httpx.AsyncClient | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global _client
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    _client = httpx.AsyncClient(limits=limits, timeout=30.0)
    try:
        yield
    finally:
        await _client.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _relay(resp: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    finally:
        await resp.aclose()


@app.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    assert _client is not None
    upstream_request = _client.build_request(
        "POST",
        f"{UPSTREAM}/chat/completions",
        content=await request.body(),
        headers={"Content-Type": "application/json"},
    )
    resp = await _client.send(upstream_request, stream=True)
    content_type = resp.headers.get("Content-Type", "application/json")
    if content_type.startswith("text/event-stream"):
        return StreamingResponse(
            _relay(resp), status_code=resp.status_code, media_type=content_type
        )
    body = await resp.aread()
    await resp.aclose()
    return Response(body, status_code=resp.status_code, media_type=content_type)
