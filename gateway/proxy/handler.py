"""The proxy's hot path, as a pure ASGI application mounted at ``/v1``.

Order per request: path check → API key → account status → body (size, JSON, parameters) →
rate limit → upstream (pooled, streamed) → response shaping → client. The request record is
handed to the durable writer and the detector afterwards; neither can block the reply.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import traceback
from time import perf_counter
from typing import Any, Protocol

import orjson

from gateway.auth.cache import KeyCache
from gateway.auth.principal import Principal
from gateway.detect.sink import FeatureSink
from gateway.domain.keys import KEY_SCHEME, hash_key
from gateway.errors import GatewayError, account_blocked, invalid_api_key, invalid_request
from gateway.logprobs.caps import RequestCaps
from gateway.logprobs.shaping import ResponseShaper
from gateway.metrics import Children, Metrics
from gateway.proxy.asgi import Receive, Scope, Send
from gateway.proxy.body import ClientDisconnected, parse_json_object, prompt_hash, read_body
from gateway.proxy.exchange import Exchange
from gateway.proxy.headers import downstream_headers, header, upstream_headers
from gateway.proxy.http1 import UpstreamResponse
from gateway.proxy.paths import RouteRules, canonical_v1_path, route_label
from gateway.proxy.streaming import (
    DONE,
    EventSplitter,
    Usage,
    encode_event,
    event_data,
    is_usage_only_chunk,
    may_carry_logprobs,
    may_carry_usage,
    usage_from,
)
from gateway.proxy.upstream import UpstreamClient
from gateway.proxy.validation import (
    GENERATION_ROUTES,
    OUTPUT_CAP_FIELD,
    VALIDATED_ROUTES,
    RequestParams,
    validate,
)
from gateway.ratelimit.estimate import (
    PromptCounter,
    char_estimate,
    estimate_tokens,
    tokenizer_counter,
)
from gateway.ratelimit.limiter import Limiter
from gateway.records import PARAMETER_FIELDS, RequestRecord
from gateway.settings import Settings
from gateway.upstream_identity.signer import UpstreamSigner
from gateway.upstream_identity.vllm_xargs import vllm_xargs

log = logging.getLogger("gateway.proxy")
STREAM_USAGE_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions"})
MAX_KEY_LENGTH = 256
WATCH_AFTER_S = 0.02
"""How long an upstream exchange runs before the gateway starts watching for the client to
leave (a late watcher still sees an early disconnect)."""


def internal_error() -> GatewayError:
    return GatewayError(500, "The gateway failed to handle this request.", type="server_error")


class RecordSink(Protocol):
    def submit(self, record: RequestRecord) -> None:
        ...


class ProxyApp:
    def __init__(
        self, *, settings: Settings, upstream: UpstreamClient, keys: KeyCache, limiter: Limiter,
        records: RecordSink, detector: FeatureSink, shaper: ResponseShaper,
        caps: RequestCaps, signer: UpstreamSigner, metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._upstream = upstream
        self._keys = keys
        self._limiter = limiter
        self._records = records
        self._detector = detector
        self._shaper = shaper
        self._caps = caps
        self._signer = signer
        self._routes = RouteRules(settings.passthrough_routes)
        # GATEWAY_UPSTREAM_KIND=vllm: the watermark account
        self._vllm = vllm_xargs(settings, GENERATION_ROUTES)
        self._hash_secret = settings.key_hash_key()
        self._count_prompt: PromptCounter = (
            tokenizer_counter(settings.tokenizer_path) if settings.tokenizer_path
            else char_estimate
        )
        self._upstream_key = (
            settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        )
        # Metric children bound once per label set (routes, classes and tiers are bounded).
        self._in_flight = metrics.in_flight
        self._requests = Children(metrics.requests)
        self._duration = Children(metrics.request_duration)
        self._upstream_duration = Children(metrics.upstream_duration)
        self._ttfb = Children(metrics.stream_ttfb)
        self._tokens = Children(metrics.tokens)
        self._auth_failures = Children(metrics.auth_failures)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange(scope, receive, send)
        self._in_flight.inc()
        try:
            await self._serve(ex)
        except GatewayError as error:
            await ex.fail(error)
        except ClientDisconnected:
            ex.status = 499
        except Exception as exc:  # the last resort: an OpenAI-shaped 500, recorded, no secrets
            _log_unexpected(exc)
            await ex.fail(internal_error())
        finally:
            self._in_flight.dec()
            self._finish(ex)

    async def _serve(self, ex: Exchange) -> None:
        scope = ex.scope
        path = canonical_v1_path(scope.get("raw_path") or scope["path"].encode())
        ex.route = route_label(path)
        principal = await self._authenticate(scope["headers"])
        record = ex.record = self._new_record(ex, principal)
        ex.watermark_identity = principal.watermark_identity
        if principal.blocked:
            raise account_blocked(principal.status)
        method = scope["method"]
        self._routes.check(method, path)
        body = await read_body(
            ex.receive, self._settings.max_body_bytes, header(scope["headers"], b"content-length")
        )
        strip_usage = False
        estimate = 0
        if method == "POST" and path in VALIDATED_ROUTES:
            body, estimate, strip_usage = self._prepare(ex, path, principal, body)
        elif method == "GET" and body:
            raise invalid_request("A GET request must not have a body.", param="body")
        admission = await self._limiter.admit(principal.account_id, principal.limits, estimate)
        if not admission.allowed:
            assert admission.error is not None
            raise admission.error
        ex.extra_headers = admission.headers
        usage: Usage | None = None
        try:
            usage = await self._forward_unless_disconnected(ex, path, body, strip_usage)
        finally:
            used = self._record_usage(record, usage)
            if used is None and ex.events_relayed:
                used = _cut_stream_floor(ex, admission.reserved_tokens)
            await self._limiter.settle(principal.account_id, admission, used)

    def _prepare(
        self, ex: Exchange, path: str, principal: Principal, body: bytes
    ) -> tuple[bytes, int, bool]:
        """Validate a JSON request the gateway understands: the body to forward, the token
        reservation, and whether to strip the usage chunk the gateway asked for."""
        assert ex.record is not None
        payload = parse_json_object(body)
        params = validate(path, payload)
        self._describe(ex.record, params)
        ex.prompt = params.prompt
        self._caps.check(principal, path, payload)
        if self._shaper.active:
            ex.shaping = self._shaper.begin(principal.account_id, path, payload, params.prompt)
        strip_usage = params.stream and path in STREAM_USAGE_ROUTES and not params.asks_usage
        if strip_usage:
            payload["stream_options"] = {**(payload.get("stream_options") or {}),
                                         "include_usage": True}
        stamped = self._vllm is not None and self._vllm.applies(path)
        if stamped:  # validation refused any client xargs: these are the gateway's alone
            assert self._vllm is not None
            self._vllm.stamp(payload, principal.watermark_identity, ex.request_id)
        max_tokens = params.max_tokens
        capped = max_tokens is None and path in OUTPUT_CAP_FIELD
        if capped:  # what is reserved is what may be generated
            max_tokens = payload[OUTPUT_CAP_FIELD[path]] = self._settings.default_max_tokens
        if strip_usage or stamped or capped:
            body = orjson.dumps(payload)
        ex.prompt_tokens = self._count_prompt(params.prompt)
        estimate = estimate_tokens(
            ex.prompt_tokens, max_tokens, params.sequences, completes=path != "/v1/embeddings",
        )
        return body, estimate, strip_usage

    async def _authenticate(self, headers: list[tuple[bytes, bytes]]) -> Principal:
        value = header(headers, b"authorization")
        if value is None or value[:7].lower() != b"bearer ":
            self._auth_failures("missing_key").inc()
            raise invalid_api_key()
        key = value[7:].strip().decode("latin-1")
        if not key.startswith(KEY_SCHEME) or len(key) > MAX_KEY_LENGTH:
            self._auth_failures("invalid_key").inc()
            raise invalid_api_key()
        try:
            principal = await self._keys.get(hash_key(key, self._hash_secret))
        except GatewayError:  # the account service is down: refused unverified, no account
            self._auth_failures("auth_unavailable").inc()
            raise
        if principal is None:
            self._auth_failures("invalid_key").inc()
            raise invalid_api_key()
        if principal.blocked:
            self._auth_failures(f"account_{principal.status}").inc()
        return principal

    def _new_record(self, ex: Exchange, principal: Principal) -> RequestRecord:
        scope = ex.scope
        return RequestRecord(
            request_id=ex.request_id, account_id=principal.account_id, key_id=principal.key_id,
            tier=principal.tier, route=scope["path"][:200], method=scope["method"],
            client_addr=self._client_addr(scope),
        )

    def _client_addr(self, scope: Scope) -> str | None:
        """The client's IP: when ``X-Forwarded-For`` is trusted, the entry the nearest of the
        ``trusted_proxy_hops`` proxies appended for the client (counted from the right: the
        client writes whatever it likes to the left), if a valid address; else the socket
        peer."""
        if self._settings.trust_forwarded_for:
            forwarded = header(scope["headers"], b"x-forwarded-for")
            hops = forwarded.split(b",") if forwarded else []
            if len(hops) >= self._settings.trusted_proxy_hops:
                entry = hops[-self._settings.trusted_proxy_hops].strip().decode("latin-1")
                try:
                    return str(ipaddress.ip_address(entry))
                except ValueError:
                    pass
        client = scope.get("client")
        return str(client[0])[:64] if client else None

    def _describe(self, record: RequestRecord, params: RequestParams) -> None:
        for name in PARAMETER_FIELDS:
            setattr(record, name, getattr(params, name))
        record.prompt_chars = len(params.prompt)
        storage = self._settings.prompt_storage
        if storage == "hash":
            record.prompt_hash = prompt_hash(params.prompt)
        elif storage == "full":
            record.prompt_hash = prompt_hash(params.prompt)
            record.prompt_text = params.prompt

    async def _forward_unless_disconnected(
        self, ex: Exchange, path: str, body: bytes, strip_usage: bool
    ) -> Usage | None:
        """Forward, cancelling the upstream exchange if the client goes away meanwhile.

        The watcher task starts only once the exchange has lasted ``WATCH_AFTER_S``: most
        answers come sooner, and a timer costs a fraction of a task that must also be
        cancelled. A client that left earlier is seen as soon as the watcher starts (the
        server's ``receive`` reports a disconnect that already happened)."""
        task = asyncio.current_task()
        assert task is not None
        watcher: asyncio.Task[None] | None = None

        def watch() -> None:
            nonlocal watcher
            watcher = asyncio.create_task(_watch_disconnect(ex, task))

        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch)
        try:
            return await self._forward(ex, path, body, strip_usage)
        except asyncio.CancelledError:
            if not ex.client_gone:
                raise
            task.uncancel()
            ex.status = 499
            if ex.record is not None:
                ex.record.error_code = "client_disconnected"
            return None
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()

    async def _forward(
        self, ex: Exchange, path: str, body: bytes, strip_usage: bool
    ) -> Usage | None:
        scope = ex.scope
        target = self._upstream.url_for(path, scope.get("query_string", b""))
        record = ex.record
        client_addr = record.client_addr if record is not None else None
        headers = upstream_headers(
            scope["headers"], self._upstream_key, ex.request_id, client_addr
        )
        if ex.watermark_identity:
            signed = self._signer.headers(
                ex.watermark_identity, ex.request_id, scope["method"], target, body
            )  # x-gateway-* names, which no client header can carry (upstream_headers)
            headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in signed]
        sent = perf_counter()
        try:
            async with self._upstream.request(scope["method"], target, headers, body) as response:
                if response.content_type == "text/event-stream":
                    return await self._relay_stream(ex, response, strip_usage)
                return await self._relay_body(ex, path, response)
        finally:
            ex.upstream_seconds = perf_counter() - sent

    async def _relay_body(
        self, ex: Exchange, path: str, response: UpstreamResponse
    ) -> Usage | None:
        data = await response.read()
        usage = None
        if ex.scope["method"] != "GET" and response.content_type == "application/json":
            payload = _loads_or_none(data)
            usage = usage_from(payload)
            if (ex.shaping is not None and response.status == 200 and isinstance(payload, dict)
                    and may_carry_logprobs(data)):  # else nothing to shape: relayed as is
                data = orjson.dumps(ex.shaping.shape(payload))
        headers = downstream_headers(response.raw_headers)
        await self._start(ex, response.status, headers, content_length=len(data))
        ex.response_complete = True
        await ex.send({"type": "http.response.body", "body": data})
        return usage

    async def _relay_stream(
        self, ex: Exchange, response: UpstreamResponse, strip_usage: bool
    ) -> Usage | None:
        ex.streaming = True
        await self._start(ex, response.status, downstream_headers(response.raw_headers))
        splitter = EventSplitter()
        usage: Usage | None = None
        async for chunk in response.chunks():
            out: list[bytes] = []
            for event in splitter.feed(chunk):
                kept, found = self._inspect_event(ex, event, strip_usage)
                usage = found or usage
                if kept:
                    out.append(kept)
            if out:
                ex.events_relayed += len(out)
                if ex.ttfb_seconds is None:
                    ex.ttfb_seconds = perf_counter() - ex.started
                await ex.send({"type": "http.response.body", "body": b"".join(out),
                               "more_body": True})
        ex.response_complete = True
        await ex.send({"type": "http.response.body", "body": splitter.remainder()})
        return usage

    def _inspect_event(
        self, ex: Exchange, event: bytes, strip_usage: bool
    ) -> tuple[bytes | None, Usage | None]:
        data = event_data(event)
        if data is None or data == DONE:
            return event, None
        shaping = ex.shaping if ex.shaping is not None and may_carry_logprobs(data) else None
        if shaping is None and not may_carry_usage(data):
            return event, None  # nothing to read or change: relayed as the upstream sent it
        payload = _loads_or_none(data)
        if not isinstance(payload, dict):
            return event, None
        usage = usage_from(payload)
        if strip_usage and is_usage_only_chunk(payload):
            return None, usage
        if shaping is not None:
            return encode_event(shaping.shape(payload)), usage
        return event, usage

    async def _start(
        self, ex: Exchange, status: int, headers: list[tuple[bytes, bytes]],
        content_length: int | None = None,
    ) -> None:
        headers.extend(ex.extra_headers)
        headers.append((b"x-request-id", ex.request_id.encode()))
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode()))
        ex.status = status
        ex.response_started = True
        await ex.send({"type": "http.response.start", "status": status, "headers": headers})

    def _record_usage(self, record: RequestRecord, usage: Usage | None) -> int | None:
        """Copy the upstream's token counts into the record; the total, when known."""
        if usage is None:
            return None
        record.prompt_tokens = usage.prompt_tokens
        record.completion_tokens = usage.completion_tokens
        tier = record.tier or "unknown"
        if usage.prompt_tokens:
            self._tokens("prompt", tier).inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self._tokens("completion", tier).inc(usage.completion_tokens)
        return (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)

    def _finish(self, ex: Exchange) -> None:
        elapsed = perf_counter() - ex.started
        route = ex.route
        self._requests(route, _status_class(ex.status)).inc()
        self._duration(route).observe(elapsed)
        if ex.upstream_seconds is not None:
            self._upstream_duration(route).observe(ex.upstream_seconds)
        if ex.ttfb_seconds is not None:
            self._ttfb(route).observe(ex.ttfb_seconds)
        record = ex.record
        if record is None:
            return
        record.status_code = ex.status
        record.latency_ms = elapsed * 1000
        if ex.upstream_seconds is not None:
            record.upstream_latency_ms = ex.upstream_seconds * 1000
        if ex.ttfb_seconds is not None:
            record.ttfb_ms = ex.ttfb_seconds * 1000
        self._records.submit(record)
        self._detector.observe(record, ex.prompt)


def _cut_stream_floor(ex: Exchange, reserved: int) -> int:
    """What a stream that ended without usage (the client left, or the upstream broke off)
    costs at least: the reservation, or the prompt plus one token per event the client got,
    whichever is more — else omitting ``max_tokens`` and leaving before the usage chunk would
    harvest a long answer for the default reservation."""
    return max(reserved, ex.prompt_tokens + ex.events_relayed)


def _log_unexpected(exc: Exception) -> None:
    """Log where it failed, not what: exception messages can echo request content."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unhandled %s in the proxy\n%s", type(exc).__name__, frames)


def _loads_or_none(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if status else "none"


async def _watch_disconnect(ex: Exchange, task: asyncio.Task[Any]) -> None:
    while True:
        message = await ex.receive()
        if message["type"] == "http.disconnect":
            if not ex.response_complete:
                ex.client_gone = True
                task.cancel()
            return
