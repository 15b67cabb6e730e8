"""The admin app's outermost guard: what no route can answer for itself.

- A body too large to be legitimate is refused with 413 before it is buffered: at once when
  ``content-length`` declares it, otherwise as the bytes arrive.
- A query parameter that is unknown, or given twice, is refused with 400 (see
  :mod:`gateway.admin.parameters`).
- An unexpected exception becomes a bare OpenAI-shaped 500, and is logged by type and frames
  only: exception messages can quote user data (SQLAlchemy's quote the statement's parameters).
  It is not re-raised, so the server does not log it a second time with its message.
"""

from __future__ import annotations

import logging
import traceback

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admin.parameters import QueryRules
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

#: The largest legitimate admin body is a watermark detection of 100,000 token ids (~1.1 MB).
MAX_BODY_BYTES = 2 * 1024 * 1024
SERVER_ERROR = "The server had an error while processing your request."


def body_too_large(limit: int) -> HTTPException:
    """An HTTPException, not a GatewayError: FastAPI lets only those out of its body parsing."""
    return HTTPException(413, f"Request body exceeds the limit of {limit} bytes.")


def describe(exc: BaseException) -> str:
    """The exception chain as types and frames, without messages (they may quote user data)."""
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kind = type(current)
        lines.append(f"{kind.__module__}.{kind.__qualname__}")
        lines += [f"  {frame.filename}:{frame.lineno} in {frame.name}"
                  for frame in traceback.extract_tb(current.__traceback__)]
        current = current.__cause__ or current.__context__
    return "\n".join(lines)


def log_unexpected(exc: BaseException, scope: Scope) -> None:
    """Log a bug with the route's template (not its path: ids, query) and the exception's shape."""
    route = getattr(scope.get("route"), "path", "?")
    log.error("unhandled error in %s %s (message withheld: it may quote user data)\n%s",
              scope.get("method", "?"), route, describe(exc))


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


class AdminGuard:
    """Pure ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.query_rules = QueryRules()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._guarded(scope, receive, send)

    def _refusal(self, scope: Scope) -> GatewayError | None:
        """Why the request is refused before it reaches the app, or None."""
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            too_large = body_too_large(self.max_body_bytes)
            return GatewayError(413, too_large.detail, code="request_too_large")
        return self.query_rules.refusal(scope)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _respond(send, refusal)
                return
            await self.app(scope, self._bounded(receive), tracked_send)
        except Exception as exc:
            log_unexpected(exc, scope)
            if not started:  # else the server ends the broken response
                await _respond(send, GatewayError(500, SERVER_ERROR, type="server_error"))

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` that raises 413 (an HTTPException: FastAPI lets it through its body
        parsing to the app's handler) once more than the limit has arrived."""
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise body_too_large(self.max_body_bytes)
            return message

        return bounded


async def _respond(send: Send, error: GatewayError) -> None:
    body = error.body()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
