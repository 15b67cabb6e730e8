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
LOG_QUARANTINED = Counter(
    "gateway_request_log_quarantined_total",
    "Request records the database refused as data, and spill-file lines that were no "
    "readable record, set aside in the spill directory's quarantine file (not retried).",
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
DETECT_OBSERVED = Counter(
    "gateway_detect_observed_total",
    "Requests taken from the detection queue by the micro-batcher (features extracted).",
)
DETECT_SCORED = Counter(
    "gateway_detect_windows_scored_total",
    "Account windows scored by the extraction classifier.",
)
DETECT_SHED = Counter(
    "gateway_detect_shed_total",
    "Account scorings postponed because the classifier was overloaded (load shedding: accounts "
    "are scored less often; no request is slowed or failed).",
)
DETECT_DROPPED = Counter(
    "gateway_detect_dropped_total",
    "Request feature records dropped because the detection queue was full.",
)
DETECT_QUEUE = Gauge(
    "gateway_detect_queue_depth",
    "Request feature records waiting for the detection micro-batcher.",
    multiprocess_mode="livesum",
)
DETECT_BATCH = Histogram(
    "gateway_detect_batch_windows",
    "Windows per classifier call (micro-batch size).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
DETECT_BATCH_SECONDS = Histogram(
    "gateway_detect_batch_seconds",
    "Time to build and score one micro-batch of windows.",
    buckets=LATENCY_BUCKETS,
)
DETECT_FLAGS = Counter(
    "gateway_detect_flags_total",
    "Flags raised by the detector, by kind (account, campaign).",
    ["kind"],
)
DETECT_ENFORCEMENTS = Counter(
    "gateway_detect_enforcements_total",
    "Automatic enforcement actions taken by the detector, by action (throttle, suspend).",
    ["action"],
)
DETECT_SCORES = Histogram(
    "gateway_detect_window_score",
    "Classifier scores of account windows (0 benign … 1 extraction).",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
DETECT_FLAG_REVIEWS = Counter(
    "gateway_detect_flag_reviews_total",
    "Flags reviewed through the admin API, by decision (confirm, dismiss).",
    ["decision"],
)
DETECT_ERRORS = Counter(
    "gateway_detect_errors_total",
    "Failures inside the detector (never visible to clients), by stage.",
    ["stage"],
)


# --- watermark and logit-stealing defences (gateway/watermark, gateway/modelserver) -------------

POLICY_REFUSALS = Counter(
    "gateway_policy_refusals_total",
    "Requests refused by the logit-stealing policy caps, by parameter.",
    ["param"],
)
WATERMARK_DETECTIONS = Counter(
    "gateway_watermark_detections_total",
    "Watermark detections run through the admin API, by outcome (attributed, not_watermarked, "
    "error).",
    ["outcome"],
)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type, aggregated across workers when needed."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
