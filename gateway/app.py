"""Assembles the gateway's ASGI application from its parts — the one place that knows them all.

``/v1/*`` goes to the pure-ASGI proxy (the hot path, no framework); everything else (admin API,
health, metrics, OpenAPI docs) to a FastAPI app, whose lifespan starts and stops the shared
runtime. Nothing does I/O at import or construction time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from gateway import __version__
from gateway.admin.deps import AdminDeps
from gateway.admin.errors import install_error_handlers
from gateway.admin.flags import create_flags_router
from gateway.admin.quarantine import create_quarantine_router
from gateway.admin.routes import create_admin_router
from gateway.admin.suspects import create_suspects_router
from gateway.admin.watermark import create_watermark_router
from gateway.auth.admin_tokens import AdminTokens
from gateway.auth.cache import KeyCache
from gateway.auth.lookup import database_loader
from gateway.detect.service import Detector, build_detector
from gateway.domain.keys import hash_key
from gateway.heap import settle_heap
from gateway.logprobs.caps import RequestCaps, build_caps
from gateway.logprobs.shaping import ResponseShaper, build_shaper
from gateway.metrics import Metrics
from gateway.proxy.asgi import Receive, Scope, Send
from gateway.proxy.handler import ProxyApp
from gateway.proxy.upstream import UpstreamClient
from gateway.ratelimit.backend import InProcessBackend
from gateway.ratelimit.limiter import AccountLimiter, Limiter, UnlimitedLimiter
from gateway.ratelimit.redis_backend import RedisBackend
from gateway.redis_client import RedisClient
from gateway.redis_client import connect as connect_redis
from gateway.redis_client import ping as redis_ping
from gateway.settings import Settings
from gateway.store.db import create_engine, session_factory
from gateway.store.writer import RequestLogWriter
from gateway.suspect.jobs import SuspectJobs
from gateway.upstream_identity.signer import UpstreamSigner, build_signer

log = logging.getLogger("gateway")
READY_TIMEOUT_S = 2.0


class Runtime:
    """The long-lived parts shared by the proxy and the admin API, each given the app's one
    :class:`Metrics` when it is built."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.engine = create_engine(settings.async_database_url)
        self.sessions = session_factory(self.engine)
        self.upstream = UpstreamClient(
            settings.upstream_url,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            read_timeout_s=settings.upstream_read_timeout_s,
            max_connections=settings.upstream_max_connections, metrics=metrics,
        )
        self.keys = KeyCache(database_loader(self.sessions, settings), settings.key_cache_ttl_s)
        self.writer = RequestLogWriter(
            self.engine,
            metrics=metrics,
            spill_dir=Path(settings.request_log_spill_dir),
            batch_size=settings.request_log_batch_size,
            flush_interval_s=settings.request_log_flush_interval_s,
            queue_max=settings.request_log_queue_max,
            replay_interval_s=settings.request_log_replay_interval_s,
        )
        self.redis: RedisClient | None = None
        self.limiter: Limiter = self._build_limiter(settings)
        self.detector: Detector = build_detector(
            settings, self.sessions, self.redis, self.keys.invalidate_account, metrics)
        self.shaper: ResponseShaper = build_shaper(settings)
        self.caps: RequestCaps = build_caps(settings, metrics)
        self.signer: UpstreamSigner = build_signer(settings)

    def _build_limiter(self, settings: Settings) -> Limiter:
        if not settings.ratelimit_enabled:
            return UnlimitedLimiter()
        if settings.redis_url is None:
            return AccountLimiter(InProcessBackend(), metrics=self.metrics,
                                  lease_s=settings.ratelimit_lease_s)
        self.redis = connect_redis(settings.redis_url, timeout_s=1.0, retry_on_timeout=False)
        return AccountLimiter(
            RedisBackend(self.redis, metrics=self.metrics), metrics=self.metrics,
            fallback=InProcessBackend(),
            failure_mode=settings.ratelimit_failure_mode,
            timeout_s=settings.ratelimit_redis_timeout_s, replicas=settings.ratelimit_replicas,
            lease_s=settings.ratelimit_lease_s,
            retry_interval_s=settings.ratelimit_retry_interval_s,
        )

    async def start(self) -> None:
        await self.upstream.start()
        await self.writer.start()
        if isinstance(self.limiter, AccountLimiter):
            await self.limiter.start()
        await self.detector.start()

    async def stop(self) -> None:
        await self.detector.stop()
        if isinstance(self.limiter, AccountLimiter):
            await self.limiter.stop()
        await self.writer.stop()
        await self.upstream.stop()
        await self.engine.dispose()
        if self.redis is not None:
            await self.redis.aclose()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Checks by dependency, and whether this replica should take traffic. A Redis outage
        under ``fail_open`` is reported but keeps the replica ready: it still limits, locally."""
        database, upstream, redis = await asyncio.gather(
            self._database_ok(), self.upstream.probe(), self._redis_ok())
        checks: dict[str, Any] = {"database": database, "upstream": upstream}
        ready = database and upstream
        if redis is not None:
            checks["redis"] = redis
            ready = ready and (redis or self.settings.ratelimit_failure_mode == "fail_open")
        if isinstance(self.limiter, AccountLimiter):
            checks["ratelimit"] = self.limiter.mode
        classifier = self.detector.ready()
        if classifier is not None:
            checks["classifier"] = classifier
            ready = ready and classifier
        return ready, checks

    async def _redis_ok(self) -> bool | None:
        if self.redis is None:
            return None
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                return await redis_ping(self.redis)
        except Exception:
            return False

    async def _database_ok(self) -> bool:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def drop_key(self, key_hash: str) -> None:
        self.keys.invalidate_key(key_hash)

    def hash_key(self, key: str) -> str:
        return hash_key(key, self.settings.key_hash_key())


class GatewayApp:
    """Routes ``/v1/*`` to the proxy and everything else to the FastAPI app."""

    def __init__(self, runtime: Runtime, proxy: ProxyApp, api: FastAPI) -> None:
        self.runtime = runtime
        self.metrics = runtime.metrics
        self.proxy = proxy
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await self.proxy(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_served_app() -> GatewayApp:
    """The app ``gateway serve`` runs, one per worker process: its heap is settled once it has
    started (:func:`gateway.heap.settle_heap`)."""
    return create_app(settle=True)


def create_app(settings: Settings | None = None, *, settle: bool = False) -> GatewayApp:
    """The composition root: builds the app's one :class:`Metrics` (on a registry of its own,
    so that each app built in a process counts for itself) and hands it to every part.
    ``settle``: freeze the start-up heap out of the garbage collector (serving processes only)."""
    settings = settings or Settings()
    runtime = Runtime(settings, Metrics.for_process())
    proxy = ProxyApp(
        settings=settings, upstream=runtime.upstream, keys=runtime.keys,
        limiter=runtime.limiter, records=runtime.writer, detector=runtime.detector,
        shaper=runtime.shaper, caps=runtime.caps, signer=runtime.signer,
        metrics=runtime.metrics,
    )
    return GatewayApp(runtime, proxy, _create_api(runtime, settle))


def _create_api(runtime: Runtime, settle: bool) -> FastAPI:
    suspects = SuspectJobs()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        if settle:
            log.info("start-up heap frozen: %d objects", settle_heap())
        try:
            yield
        finally:
            await suspects.close()  # before the database goes: each run records how it ended
            await runtime.stop()

    api = FastAPI(
        title="Anti-extraction gateway", version=__version__, lifespan=lifespan,
        description="Admin REST API and operations endpoints. The OpenAI-compatible proxy "
        "serves /v1/*.",
    )
    install_error_handlers(api)
    deps = AdminDeps(
        sessions=runtime.sessions, settings=runtime.settings,
        tokens=AdminTokens.from_settings(runtime.settings), metrics=runtime.metrics,
        on_account_changed=runtime.keys.invalidate_account,
        on_key_revoked=runtime.drop_key, risk=runtime.detector.risk,
    )
    api.include_router(create_admin_router(deps))
    api.include_router(create_flags_router(deps))
    api.include_router(create_watermark_router(deps))
    api.include_router(create_quarantine_router(deps))
    api.include_router(create_suspects_router(deps, suspects))
    _add_operations_routes(api, runtime)
    return api


def _add_operations_routes(api: FastAPI, runtime: Runtime) -> None:
    @api.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive and its event loop answers."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Every dependency answers: database, upstream, Redis and the classifier (when
        configured)."""
        ready, checks = await runtime.readiness()
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @api.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics_endpoint() -> Response:
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)
