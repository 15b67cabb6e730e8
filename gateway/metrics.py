"""Every Prometheus metric the gateway exports, defined once.

Labels are by route, tier or kind — never by account or key (cardinality, and privacy).
With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` must be set before this module is
imported (``gateway serve`` does it); ``render()`` then aggregates every worker's values.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
)

REQUESTS = Counter(
    "gateway_requests_total",
    "Proxied requests by route and status class (2xx, 4xx, 5xx).",
    ["route", "status_class"],
)
REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time from request received to last byte sent, by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    "gateway_upstream_duration_seconds",
    "Time spent waiting on the upstream (request sent to last byte received), by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
STREAM_TTFB = Histogram(
    "gateway_stream_ttfb_seconds",
    "Time to first byte of streamed responses, measured at the gateway, by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "gateway_requests_in_flight",
    "Requests currently being proxied.",
    multiprocess_mode="livesum",
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total",
    "Upstream failures by kind (connect, timeout, protocol).",
    ["kind"],
)
AUTH_FAILURES = Counter(
    "gateway_auth_failures_total",
    "Rejected requests before forwarding, by reason.",
    ["reason"],
)
TOKENS = Counter(
    "gateway_tokens_total",
    "Tokens reported by the upstream, by kind (prompt, completion) and tier.",
    ["kind", "tier"],
)
LOG_QUEUE_DEPTH = Gauge(
    "gateway_request_log_queue_depth",
    "Request records waiting to be written to the database.",
    multiprocess_mode="livesum",
)
LOG_WRITTEN = Counter(
    "gateway_request_log_written_total",
    "Request records written to the database (directly or by replay).",
)
LOG_SPILLED = Counter(
    "gateway_request_log_spilled_total",
    "Request records appended to the local spill file because the database was unavailable "
    "or the queue was full.",
)
LOG_REPLAYED = Counter(
    "gateway_request_log_replayed_total",
    "Request records replayed from the spill file into the database.",
)
LOG_BATCH_DURATION = Histogram(
    "gateway_request_log_batch_seconds",
    "Time to write one batch of request records.",
    buckets=LATENCY_BUCKETS,
)
LOG_WRITE_ERRORS = Counter(
    "gateway_request_log_write_errors_total",
    "Failed database writes of request-record batches.",
)
LOG_SPILL_PENDING = Gauge(
    "gateway_request_log_spill_pending_bytes",
    "Bytes of request records in spill files awaiting replay.",
    multiprocess_mode="livesum",
)
ADMIN_ACTIONS = Counter(
    "gateway_enforcement_actions_total",
    "Enforcement actions taken on accounts, by action.",
    ["action"],
)

RATELIMIT_DECISIONS = Counter(
    "gateway_ratelimit_decisions_total",
    "Rate-limit decisions by limit (requests, tokens_per_minute, tokens_per_day, concurrency; "
    "'all' when admitted) and outcome.",
    ["limit", "outcome"],
)
RATELIMIT_LATENCY = Histogram(
    "gateway_ratelimit_decision_seconds",
    "Time to reach an admission decision (one backend round trip).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
RATELIMIT_BACKEND_ERRORS = Counter(
    "gateway_ratelimit_backend_errors_total",
    "Failed or timed-out calls to the shared rate-limit backend (Redis), by error kind.",
    ["kind"],
)
RATELIMIT_FALLBACK = Gauge(
    "gateway_ratelimit_fallback_active",
    "1 while the shared rate-limit backend is down and the failure mode is in force.",
    multiprocess_mode="max",
)


# --- detection (gateway/detect) -----------------------------------------------------------------

# --- watermark and logit-stealing defences (gateway/watermark, gateway/modelserver) -------------


def render() -> tuple[bytes, str]:
    """The exposition text and its content type, aggregated across workers when needed."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
