"""Every Prometheus metric the gateway exports, defined once — as attributes of a :class:`Metrics`
object built on an injected :class:`~prometheus_client.CollectorRegistry` (as client_python's own
metrics take a ``registry``).

The composition root (``gateway.app.create_app``) builds one ``Metrics`` per application and
passes it to every component that records; tests build their own on a fresh registry and read
samples with ``metrics.registry.get_sample_value(name, labels)``. Importing this module has no
side effects: nothing is registered anywhere until a ``Metrics`` is built.

Labels are by route, tier or kind — never by account or key (cardinality, and privacy).

Multiprocess mode (several uvicorn workers): ``PROMETHEUS_MULTIPROC_DIR`` is read when a
``Metrics`` is built, not when a module is imported, so there is no import-order rule — only that
it be set before the application is built (``gateway serve --workers N`` sets it before starting
the workers). :meth:`Metrics.render` then aggregates every worker's values from that directory.

Every gauge is ``live*`` in multiprocess mode, and :meth:`Metrics.render` first forgets the gauges
of workers that no longer run (:func:`forget_dead_workers`): a worker killed while Redis was down
left ``gateway_ratelimit_fallback_active`` at 1 for the rest of the gateway's life (the 30-minute
cluster soak), and one killed mid-request left its in-flight count behind. Counters and histograms
of dead workers stay (totals must not go down).
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
)
RATELIMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
REDIS_CLUSTER_ERROR_KINDS = (
    "ClusterDownError", "SlotNotCoveredError", "RedisClusterException", "MovedError", "AskError",
    "TryAgainError", "ClusterError",
)
"""Error kinds only a Redis Cluster raises (alert ``GatewayRedisClusterErrors`` names them)."""
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class Metrics:
    """The gateway's metrics, registered on ``registry``; one object per application."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.multiprocess_dir: str | None = os.environ.get(MULTIPROC_ENV) or None
        _use_value_class(self.multiprocess_dir)
        r = registry

        # --- proxy (gateway/proxy) --------------------------------------------------------------
        self.requests = Counter(
            "gateway_requests_total",
            "Proxied requests by route and status class (2xx, 4xx, 5xx).",
            ["route", "status_class"], registry=r,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request received to last byte sent, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds",
            "Time spent waiting on the upstream (request sent to last byte received), by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stream_ttfb = Histogram(
            "gateway_stream_ttfb_seconds",
            "Time to first byte of streamed responses, measured at the gateway, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "Requests currently being proxied.",
            multiprocess_mode="livesum", registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total",
            "Upstream failures by kind (connect, timeout, protocol).",
            ["kind"], registry=r,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures_total",
            "Rejected requests before forwarding, by reason.",
            ["reason"], registry=r,
        )
        self.tokens = Counter(
            "gateway_tokens_total",
            "Tokens reported by the upstream, by kind (prompt, completion) and tier.",
            ["kind", "tier"], registry=r,
        )

        # --- request log (gateway/store) --------------------------------------------------------
        self.log_queue_depth = Gauge(
            "gateway_request_log_queue_depth",
            "Request records waiting to be written to the database.",
            multiprocess_mode="livesum", registry=r,
        )
        self.log_written = Counter(
            "gateway_request_log_written_total",
            "Request records written to the database (directly or by replay).",
            registry=r,
        )
        self.log_spilled = Counter(
            "gateway_request_log_spilled_total",
            "Request records appended to the local spill file because the database was "
            "unavailable or the queue was full.",
            registry=r,
        )
        self.log_replayed = Counter(
            "gateway_request_log_replayed_total",
            "Request records replayed from the spill file into the database.",
            registry=r,
        )
        self.log_batch_duration = Histogram(
            "gateway_request_log_batch_seconds",
            "Time to write one batch of request records.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.log_write_errors = Counter(
            "gateway_request_log_write_errors_total",
            "Failed database writes of request-record batches.",
            registry=r,
        )
        self.log_partitions_ahead = Gauge(
            "gateway_request_log_partitions_ahead_days",
            "Days of request-log partitions ready beyond today (PostgreSQL; -1: none for today).",
            multiprocess_mode="livemax", registry=r,
        )
        self.log_spill_pending = Gauge(
            "gateway_request_log_spill_pending_bytes",
            "Bytes of request records in spill files awaiting replay.",
            multiprocess_mode="livesum", registry=r,
        )
        self.log_quarantined = Counter(
            "gateway_request_log_quarantined_total",
            "Request records the database refused as data, and spill-file lines that were no "
            "readable record, set aside in the spill directory's quarantine file (not retried).",
            registry=r,
        )

        # --- admin API (gateway/admin) ----------------------------------------------------------
        self.admin_actions = Counter(
            "gateway_enforcement_actions_total",
            "Enforcement actions taken on accounts, by action.",
            ["action"], registry=r,
        )

        # --- rate limiting (gateway/ratelimit) --------------------------------------------------
        self.ratelimit_decisions = Counter(
            "gateway_ratelimit_decisions_total",
            "Rate-limit decisions by limit (requests, tokens_per_minute, tokens_per_day, "
            "concurrency; 'all' when admitted) and outcome.",
            ["limit", "outcome"], registry=r,
        )
        self.ratelimit_latency = Histogram(
            "gateway_ratelimit_decision_seconds",
            "Time to reach an admission decision (one backend round trip).",
            buckets=RATELIMIT_BUCKETS, registry=r,
        )
        self.ratelimit_backend_errors = Counter(
            "gateway_ratelimit_backend_errors_total",
            "Failed or timed-out calls to the shared rate-limit backend (Redis), by error kind.",
            ["kind"], registry=r,
        )
        for kind in REDIS_CLUSTER_ERROR_KINDS:  # exported at 0: the cluster alert has a series
            self.ratelimit_backend_errors.labels(kind)
        self.ratelimit_fallback = Gauge(
            "gateway_ratelimit_fallback_active",
            "1 while the shared rate-limit backend is down and the failure mode is in force.",
            multiprocess_mode="livemax", registry=r,
        )

        # --- detection (gateway/detect) ---------------------------------------------------------
        self.detect_observed = Counter(
            "gateway_detect_observed_total",
            "Requests taken from the detection queue by the micro-batcher (features extracted).",
            registry=r,
        )
        self.detect_scored = Counter(
            "gateway_detect_windows_scored_total",
            "Account windows scored by the extraction classifier.",
            registry=r,
        )
        self.detect_shed = Counter(
            "gateway_detect_shed_total",
            "Account scorings postponed because the classifier was overloaded (load shedding: "
            "accounts are scored less often; no request is slowed or failed).",
            registry=r,
        )
        self.detect_dropped = Counter(
            "gateway_detect_dropped_total",
            "Request feature records dropped because the detection queue was full.",
            registry=r,
        )
        self.detect_queue = Gauge(
            "gateway_detect_queue_depth",
            "Request feature records waiting for the detection micro-batcher.",
            multiprocess_mode="livesum", registry=r,
        )
        self.detect_batch = Histogram(
            "gateway_detect_batch_windows",
            "Windows per classifier call (micro-batch size).",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.detect_batch_seconds = Histogram(
            "gateway_detect_batch_seconds",
            "Time to build and score one micro-batch of windows.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.detect_flags = Counter(
            "gateway_detect_flags_total",
            "Flags raised by the detector, by kind (account, campaign).",
            ["kind"], registry=r,
        )
        self.detect_withheld = Counter(
            "gateway_detect_flags_withheld_total",
            "Account verdicts the detector withheld, by reason (declared_workload: the account "
            "is within its declared workload's allowance).",
            ["reason"], registry=r,
        )
        self.detect_enforcements = Counter(
            "gateway_detect_enforcements_total",
            "Automatic enforcement actions taken by the detector, by action (throttle, suspend).",
            ["action"], registry=r,
        )
        self.detect_scores = Histogram(
            "gateway_detect_window_score",
            "Classifier scores of account windows (0 benign … 1 extraction).",
            buckets=SCORE_BUCKETS, registry=r,
        )
        self.detect_flag_reviews = Counter(
            "gateway_detect_flag_reviews_total",
            "Flags reviewed through the admin API, by decision (confirm, dismiss).",
            ["decision"], registry=r,
        )
        self.detect_errors = Counter(
            "gateway_detect_errors_total",
            "Failures inside the detector (never visible to clients), by stage.",
            ["stage"], registry=r,
        )

        # --- watermark and logit-stealing defences (gateway/watermark, gateway/modelserver) -----
        self.policy_refusals = Counter(
            "gateway_policy_refusals_total",
            "Requests refused by the logit-stealing policy caps, by parameter.",
            ["param"], registry=r,
        )
        self.watermark_detections = Counter(
            "gateway_watermark_detections_total",
            "Watermark detections run through the admin API, by outcome (attributed, "
            "not_watermarked, error).",
            ["outcome"], registry=r,
        )

        self._exposed = self._exposition_registry()

    @classmethod
    def for_process(cls) -> Metrics:
        """The application's metrics: a fresh registry that also carries the process, platform
        and garbage-collector collectors client_python puts on its global registry (single-
        process mode; with several workers only the aggregated gateway metrics are exported)."""
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        return cls(registry)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, aggregated across workers in multiprocess
        mode (over the workers alive now, for gauges)."""
        if self.multiprocess_dir is not None:
            forget_dead_workers(self.multiprocess_dir)
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST

    def _exposition_registry(self) -> CollectorRegistry:
        if self.multiprocess_dir is None:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, path=self.multiprocess_dir)
        return registry


M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A labelled metric's children, bound on first use and kept: the hot path then skips
    ``labels()`` (a lock and a key built per call). For bounded label values only (routes,
    status classes, tiers, kinds) — never for values a client chooses."""

    __slots__ = ("_bound", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._bound: dict[tuple[str, ...], M] = {}

    def __call__(self, *label_values: str) -> M:
        child = self._bound.get(label_values)
        if child is None:
            child = self._bound[label_values] = self._metric.labels(*label_values)
        return child


_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def forget_dead_workers(directory: str) -> list[int]:
    """Drop the live-gauge files of processes that no longer exist (uvicorn's supervisor, which
    replaces a dead worker, has no hook to do it); returns their pids. A zombie not yet reaped
    counts as alive until its replacement is started."""
    dead = sorted({int(m.group(1)) for name in os.listdir(directory)
                   if (m := _LIVE_GAUGE_FILE.fullmatch(name)) and not _alive(int(m.group(1)))})
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):  # another worker rendering forgot it first
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _use_value_class(multiprocess_dir: str | None) -> None:
    """client_python picks how metric values are stored (in memory, or in per-process files
    under the multiprocess directory) once, when it is imported; re-pick it here when that
    choice no longer matches, so that the environment counts when metrics are built."""
    in_memory = values.ValueClass is values.MutexValue
    if multiprocess_dir is None and not in_memory:
        values.ValueClass = values.MutexValue
    elif multiprocess_dir is not None and in_memory:
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


__all__ = ["LATENCY_BUCKETS", "MULTIPROC_ENV", "REDIS_CLUSTER_ERROR_KINDS", "Children", "Metrics",
           "forget_dead_workers"]
