"""The one pooled upstream client: URLs under the upstream's base, and failures as errors.

The connections are :mod:`gateway.proxy.http1`'s (a keep-alive pool parsed by httptools; it
replaced aiohttp here, which cost ~30% of the proxy's CPU under load). Failures become
OpenAI-shaped errors: connect failures 502, timeouts 504, broken responses 502.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.errors import (
    GatewayError,
    invalid_request,
    upstream_failed,
    upstream_timeout,
    upstream_unreachable,
)
from gateway.metrics import Metrics
from gateway.proxy.http1 import (
    ConnectFailed,
    ConnectionPool,
    Origin,
    StaleConnection,
    UpstreamResponse,
    encode_request,
)

FAILURE_KINDS = ("connect", "timeout", "protocol")
_UNSAFE_IN_TARGET = re.compile(rb"[\x00-\x20\x7f]")


class UpstreamClient:
    def __init__(
        self, base_url: str, *, connect_timeout_s: float, read_timeout_s: float,
        max_connections: int, metrics: Metrics,
    ) -> None:
        self._origin = Origin.parse(base_url)
        self._errors = {kind: metrics.upstream_errors.labels(kind) for kind in FAILURE_KINDS}
        self._pool = ConnectionPool(
            self._origin, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
            max_connections=max_connections,
        )

    async def start(self) -> None:
        """Connections open on first use; kept for the lifespan's symmetry."""

    async def stop(self) -> None:
        self._pool.close()

    def url_for(self, v1_path: str, query: bytes) -> str:
        """The request target: ``/v1/x`` under the upstream's own ``/v1`` base (the path is
        already canonical; the query string passes as the client percent-encoded it)."""
        target = self._origin.base_path + v1_path[3:]
        if query:
            if _UNSAFE_IN_TARGET.search(query):  # a space or control byte would end the line
                raise invalid_request("The query string holds a space or control character.",
                                      param="query")
            target += "?" + query.decode("latin-1")
        return target

    @asynccontextmanager
    async def request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> AsyncIterator[UpstreamResponse]:
        """An open upstream response; errors before and while reading map to gateway errors.
        A reused connection found closed before it answered is retried once on a new one."""
        request = encode_request(method, target, self._origin.host_header, headers, body)
        conn = None
        try:
            conn = await self._pool.acquire()
            try:
                response = await conn.exchange(request, head=method == "HEAD")
            except StaleConnection:
                self._pool.release(conn)
                conn = None
                conn = await self._pool.acquire(fresh=True)
                response = await conn.exchange(request, head=method == "HEAD")
            yield response
        except (OSError, TimeoutError) as exc:  # the upstream's failures (http1's included);
            kind, error = classify_failure(exc)  # a bug in the relay stays a 500 of its own
            self._errors[kind].inc()
            raise error from exc
        finally:
            if conn is not None:
                self._pool.release(conn)

    async def probe(self, timeout_s: float = 2.0) -> bool:
        """Readiness: the upstream answers ``GET /v1/models`` with any non-5xx status."""
        try:
            async with asyncio.timeout(timeout_s), self.request(
                "GET", self._origin.base_path + "/models", [], b""
            ) as response:
                await response.read()
                return response.status < 500
        except (GatewayError, TimeoutError):
            return False


def classify_failure(exc: BaseException) -> tuple[str, GatewayError]:
    """The failure's kind (the ``gateway_upstream_errors_total`` label) and the client's error."""
    if isinstance(exc, asyncio.CancelledError):
        raise exc
    if isinstance(exc, TimeoutError):
        return "timeout", upstream_timeout()
    if isinstance(exc, ConnectFailed | ConnectionRefusedError):
        return "connect", upstream_unreachable()
    return "protocol", upstream_failed()
