"""The one pooled upstream HTTP client.

aiohttp, chosen by measurement: as a proxy's upstream client its connection pool was 3–5× faster
than httpx's on this hardware (``bench/proxy/proxy_overhead.py`` reproduces the comparison).
Failures become OpenAI-shaped errors: connect failures 502, timeouts 504, broken responses 502.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import GatewayError, upstream_failed, upstream_timeout, upstream_unreachable
from gateway.metrics import Metrics

FAILURE_KINDS = ("connect", "timeout", "protocol")


class UpstreamClient:
    def __init__(
        self, base_url: str, *, connect_timeout_s: float, read_timeout_s: float,
        max_connections: int, metrics: Metrics,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._errors = {kind: metrics.upstream_errors.labels(kind) for kind in FAILURE_KINDS}
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, v1_path: str, query: bytes) -> URL:
        """``/v1/x`` under the upstream's own ``/v1`` base; the path is already canonical."""
        target = self._base + v1_path[3:]
        if query:
            target += "?" + query.decode("latin-1")
        return URL(target, encoded=True)

    @asynccontextmanager
    async def request(
        self, method: str, url: URL, headers: CIMultiDict[str], body: bytes
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An open upstream response; errors before and while reading map to gateway errors."""
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        try:
            async with self._session.request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            ) as response:
                yield response
        except GatewayError:
            raise
        except Exception as exc:  # every failure of the upstream exchange
            kind, error = classify_failure(exc)
            self._errors[kind].inc()
            raise error from exc

    async def probe(self, timeout_s: float = 2.0) -> bool:
        """Readiness: the upstream answers ``GET /v1/models`` with any non-5xx status."""
        assert self._session is not None
        try:
            async with self._session.get(
                self._base + "/models", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                return response.status < 500
        except (aiohttp.ClientError, TimeoutError):
            return False


def classify_failure(exc: BaseException) -> tuple[str, GatewayError]:
    """The failure's kind (the ``gateway_upstream_errors_total`` label) and the client's error."""
    if isinstance(exc, asyncio.CancelledError):
        raise exc
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout", upstream_timeout()
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return "connect", upstream_unreachable()
    return "protocol", upstream_failed()
