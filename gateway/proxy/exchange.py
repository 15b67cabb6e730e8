"""Per-request state on the hot path, and the one place errors are turned into responses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from time import perf_counter

from gateway.errors import GatewayError
from gateway.logprobs.shaping import ShapingSession
from gateway.proxy.asgi import Receive, Scope, Send, send_error
from gateway.proxy.streaming import encode_event
from gateway.records import RequestRecord


class _RequestIds:
    """``req_`` and 96 random bits in hex. The bits come from ``os.urandom`` 256 ids at a time
    (one system call, not one a request); a forked child drops what its parent had drawn, so
    no two processes hand out the same id (it is also the nonce of signed upstream calls)."""

    BATCH = 256

    def __init__(self) -> None:
        self._ids: list[str] = []
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._ids = []

    def next(self) -> str:
        if not self._ids:
            block = os.urandom(12 * self.BATCH).hex()
            self._ids = [f"req_{block[i:i + 24]}" for i in range(0, len(block), 24)]
            self._ids.reverse()
        return self._ids.pop()


new_request_id = _RequestIds().next


@dataclass(slots=True)
class Exchange:
    scope: Scope
    receive: Receive
    send: Send
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=perf_counter)
    route: str = "other"
    record: RequestRecord | None = None
    status: int = 0
    streaming: bool = False
    response_started: bool = False
    response_complete: bool = False
    client_gone: bool = False
    upstream_seconds: float | None = None
    ttfb_seconds: float | None = None
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    prompt: str = ""
    prompt_tokens: int = 0  # the gateway's own count, for charging a stream cut short
    events_relayed: int = 0  # SSE events sent to the client
    shaping: ShapingSession | None = None
    watermark_identity: str | None = None  # whose key the upstream watermarks the answer with

    async def fail(self, error: GatewayError) -> None:
        """Answer with ``error``; once a stream has started, as a final SSE error event."""
        if self.record is not None:
            self.record.error_code = error.code or error.type
        if not self.response_started:
            self.status = error.status
            self.response_started = self.response_complete = True
            await send_error(self.send, error, self.request_id)
            return
        if self.response_complete:
            return
        self.response_complete = True
        body = b""
        if self.streaming:
            body = encode_event(
                {"error": {"message": error.message, "type": error.type,
                           "param": error.param, "code": error.code}}
            )
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
