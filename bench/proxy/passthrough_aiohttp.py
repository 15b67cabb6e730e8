"""Minimal FastAPI + aiohttp pass-through: the floor for a Python proxy in ``proxy_overhead.py``.

One pooled ``aiohttp.ClientSession``; the request body is forwarded as is, a JSON answer is
read and returned whole, an SSE answer is streamed through chunk by chunk. The upstream base
URL (ending in /v1) comes from ``BENCH_UPSTREAM_URL``. Run with uvicorn, one worker.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8001/v1").rstrip("/")
_session: aiohttp.ClientSession | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global _session
    connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=60)
    _session = aiohttp.ClientSession(connector=connector)
    try:
        yield
    finally:
        await _session.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _relay(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    finally:
        resp.release()


@app.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    assert _session is not None
    resp = await _session.post(
        f"{UPSTREAM}/chat/completions",
        data=await request.body(),
        headers={"Content-Type": "application/json"},
    )
    content_type = resp.headers.get("Content-Type", "application/json")
    if content_type.startswith("text/event-stream"):
        return StreamingResponse(_relay(resp), status_code=resp.status, media_type=content_type)
    async with resp:
        body = await resp.read()
    return Response(body, status_code=resp.status, media_type=content_type)
