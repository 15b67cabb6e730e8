"""The limiter the proxy calls on every request, over a replaceable backend.

``admit`` reserves an estimate before forwarding (one backend round trip); ``settle`` runs on
every exit path afterwards with the real token usage when known, releasing the concurrency slot
and refunding or charging the difference. Slots are leases: a background task renews the ones in
flight, so a crashed replica's slots expire by themselves.

When the shared backend (Redis) fails or is slower than its timeout, the configured failure mode
applies — ``fail_open``: the in-process fallback with each limit divided by the replica count,
``fail_closed``: 503 — and the backend is retried after a short pause. Never silently: a metric and
``/readyz`` say which is in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from gateway.domain.limits import TierLimits
from gateway.errors import GatewayError
from gateway.metrics import Children, Metrics
from gateway.ratelimit.backend import AdmitRequest, Backend
from gateway.ratelimit.decision import Decision, rate_limit_headers, rejection
from gateway.redis_client import REDIS_ERRORS

log = logging.getLogger("gateway.ratelimit")
FailureMode = Literal["fail_open", "fail_closed"]
BACKEND_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, TimeoutError)


@dataclass(slots=True)
class Admission:
    allowed: bool
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    error: GatewayError | None = None
    reserved_tokens: int = 0
    slot: str = ""
    backend: Backend | None = None
    limits: TierLimits | None = None


class Limiter(Protocol):
    async def admit(self, account_id: str, limits: TierLimits, estimated_tokens: int) -> Admission:
        ...

    async def settle(self, account_id: str, admission: Admission, used_tokens: int | None) -> None:
        ...


class UnlimitedLimiter:
    """Admits everything: for deployments that limit elsewhere."""

    async def admit(self, account_id: str, limits: TierLimits, estimated_tokens: int) -> Admission:
        return Admission(allowed=True, reserved_tokens=estimated_tokens)

    async def settle(self, account_id: str, admission: Admission, used_tokens: int | None) -> None:
        return None


def limiter_unavailable() -> GatewayError:
    return GatewayError(
        503, "Rate limiting is temporarily unavailable; retry shortly.",
        type="service_unavailable", code="rate_limiter_unavailable",
        headers={"retry-after": "1"},
    )


class AccountLimiter:
    def __init__(
        self, backend: Backend, *, metrics: Metrics, fallback: Backend | None = None,
        failure_mode: FailureMode = "fail_open", timeout_s: float = 0.1, replicas: int = 1,
        lease_s: float = 60.0, retry_interval_s: float = 1.0,
    ) -> None:
        self._backend = backend
        self._allowed = metrics.ratelimit_decisions.labels("all", "allowed")
        self._rejected = Children(metrics.ratelimit_decisions)
        self._latency = metrics.ratelimit_latency
        self._fallback_active = metrics.ratelimit_fallback
        self._backend_errors = metrics.ratelimit_backend_errors
        self._fallback = fallback if failure_mode == "fail_open" else None
        self._shared = fallback is not None or failure_mode == "fail_closed"
        self._failure_mode = failure_mode
        self._timeout = timeout_s
        self._replicas = max(replicas, 1)
        self._lease_us = int(lease_s * 1_000_000)
        self._retry_interval = retry_interval_s
        self._down_until = 0.0
        self._inflight: dict[str, tuple[str, Backend]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None

    @property
    def degraded(self) -> bool:
        """True while the shared backend is considered down."""
        return self._down_until > 0.0

    @property
    def mode(self) -> str:
        if not self._shared:
            return "in_process"
        if not self.degraded:
            return "redis"
        return "fallback" if self._fallback is not None else "failing_closed"

    async def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_forever())
        if self._shared:
            self._prober = asyncio.create_task(self._probe_forever())

    async def stop(self) -> None:
        for task in (self._renewer, self._prober):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        drain = getattr(self._backend, "drain", None)
        if drain is not None:
            with contextlib.suppress(*BACKEND_ERRORS):
                async with asyncio.timeout(2):
                    await drain()

    async def admit(self, account_id: str, limits: TierLimits, estimated_tokens: int) -> Admission:
        request = AdmitRequest(account_id, limits, estimated_tokens, os.urandom(8).hex(),
                               self._lease_us)
        started = time.perf_counter()
        backend, decision = await self._decide(request)
        self._latency.observe(time.perf_counter() - started)
        if decision is None:
            self._rejected("unavailable", "rejected").inc()
            return Admission(False, error=limiter_unavailable())
        if not decision.allowed:
            self._rejected(decision.rejected_by or "unknown", "rejected").inc()
            return Admission(False, error=rejection(decision, limits, estimated_tokens))
        self._allowed.inc()
        assert backend is not None
        self._inflight[request.slot] = (account_id, backend)
        return Admission(
            True, headers=rate_limit_headers(decision, limits), reserved_tokens=estimated_tokens,
            slot=request.slot, backend=backend, limits=request.limits,
        )

    async def settle(self, account_id: str, admission: Admission, used_tokens: int | None) -> None:
        if admission.backend is None or admission.limits is None:
            return
        self._inflight.pop(admission.slot, None)
        try:  # never waits on Redis: the Redis backend defers settlements (see pipeline.py)
            await admission.backend.settle(
                account_id, admission.limits, admission.slot, admission.reserved_tokens,
                used_tokens,
            )
        except BACKEND_ERRORS as exc:
            # The slot's lease expires by itself; the token difference is lost (documented).
            self._record_error(exc)

    async def _decide(self, request: AdmitRequest) -> tuple[Backend | None, Decision | None]:
        if not self._shared:
            return self._backend, await self._backend.admit(request)
        if time.monotonic() >= self._down_until:
            try:
                async with asyncio.timeout(self._timeout):
                    decision = await self._backend.admit(request)
            except BACKEND_ERRORS as exc:
                self._trip(exc)
            else:
                self._recover()
                return self._backend, decision
        if self._fallback is None:
            return None, None
        divided = replace(request, limits=self._divided(request.limits))
        return self._fallback, await self._fallback.admit(divided)

    def _divided(self, limits: TierLimits) -> TierLimits:
        r = self._replicas
        return TierLimits(
            requests_per_minute=-(-limits.requests_per_minute // r),
            tokens_per_minute=-(-limits.tokens_per_minute // r),
            tokens_per_day=-(-limits.tokens_per_day // r),
            max_concurrent=-(-limits.max_concurrent // r),
        )

    def _trip(self, exc: BaseException) -> None:
        self._record_error(exc)
        if not self.degraded:
            log.warning("rate-limit backend unavailable (%s); %s", type(exc).__name__,
                        self._failure_mode)
        self._down_until = time.monotonic() + self._retry_interval
        self._fallback_active.set(1)

    def _recover(self) -> None:
        if self.degraded:
            log.warning("rate-limit backend recovered")
            self._down_until = 0.0
            self._fallback_active.set(0)

    def _record_error(self, exc: BaseException) -> None:
        kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        self._backend_errors.labels(kind[:40]).inc()

    async def _probe_forever(self) -> None:
        """While degraded, ask the backend every retry interval whether it is back. Admissions
        also find out, but a worker that gets no requests would otherwise stay degraded, and
        report the fallback (``gateway_ratelimit_fallback_active``, an alert), for good."""
        while True:
            await asyncio.sleep(self._retry_interval)
            if not self.degraded or time.monotonic() < self._down_until:
                continue
            try:
                async with asyncio.timeout(self._timeout):
                    await self._backend.probe()
            except BACKEND_ERRORS as exc:
                self._trip(exc)
            else:
                self._recover()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_us / 3_000_000)
            by_backend: dict[int, tuple[Backend, list[tuple[str, str]]]] = {}
            for slot, (account_id, backend) in list(self._inflight.items()):
                by_backend.setdefault(id(backend), (backend, []))[1].append((account_id, slot))
            for backend, slots in by_backend.values():
                try:
                    await backend.renew(slots, self._lease_us)
                except BACKEND_ERRORS as exc:
                    self._record_error(exc)
