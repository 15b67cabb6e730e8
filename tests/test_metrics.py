"""Metrics are an object on an injected registry: independent per registry, nothing registered at
import, multiprocess mode decided when they are built, and the factory's app exports its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, values

from gateway.app import create_app
from gateway.metrics import MULTIPROC_ENV, REDIS_CLUSTER_ERROR_KINDS, Children, Metrics
from gateway.settings import Settings


def test_two_metrics_objects_on_two_registries_count_independently() -> None:
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    first.requests.labels("/v1/models", "2xx").inc()
    first.requests.labels("/v1/models", "2xx").inc()
    second.requests.labels("/v1/models", "2xx").inc()
    second.ratelimit_fallback.set(1)
    labels = {"route": "/v1/models", "status_class": "2xx"}
    assert first.registry.get_sample_value("gateway_requests_total", labels) == 2
    assert second.registry.get_sample_value("gateway_requests_total", labels) == 1
    assert first.registry.get_sample_value("gateway_ratelimit_fallback_active") == 0
    assert second.registry.get_sample_value("gateway_ratelimit_fallback_active") == 1


def test_a_registry_holds_one_definition_of_each_metric() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(registry)


def test_importing_the_module_registers_nothing_and_reads_no_environment() -> None:
    script = (
        "import os, prometheus_client as p\n"
        "import gateway.metrics, gateway.app, gateway.cli\n"
        "names = {f.name for f in p.REGISTRY.collect()}\n"
        "assert not {n for n in names if n.startswith('gateway_')}, names\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_bound_children_are_the_labelled_children() -> None:
    metrics = Metrics(CollectorRegistry())
    requests = Children(metrics.requests)
    assert requests("/v1/models", "2xx") is requests("/v1/models", "2xx")
    assert requests("/v1/models", "2xx") is metrics.requests.labels("/v1/models", "2xx")


def test_render_exports_this_registry_in_single_process_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    metrics = Metrics(CollectorRegistry())
    assert metrics.multiprocess_dir is None
    metrics.log_written.inc(3)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    assert b"gateway_request_log_written_total 3.0" in body


def test_multiprocess_mode_is_decided_when_the_metrics_are_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The directory is set after prometheus_client was imported (as it is here): it still
    counts, because it is read when the metrics are built; render() aggregates the files."""
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored after the test
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    metrics = Metrics(CollectorRegistry())
    assert metrics.multiprocess_dir == str(tmp_path)
    metrics.requests.labels("/v1/models", "2xx").inc()
    metrics.in_flight.inc()
    assert list(tmp_path.glob("*.db")), "values live in the multiprocess directory"
    body, _ = metrics.render()
    assert b'gateway_requests_total{route="/v1/models",status_class="2xx"} 1.0' in body
    assert b"gateway_requests_in_flight 1.0" in body
    monkeypatch.delenv(MULTIPROC_ENV)
    assert Metrics(CollectorRegistry()).multiprocess_dir is None
    assert values.ValueClass is values.MutexValue


async def test_the_factory_app_exports_its_request_counter_on_metrics() -> None:
    """No lifespan, no services: a request refused for want of a key is still counted."""
    app = create_app(Settings(mode="local"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        refused = await client.get("/v1/models")
        assert refused.status_code == 401
        text = (await client.get("/metrics")).text
    assert 'gateway_requests_total{route="/v1/models",status_class="4xx"} 1.0' in text
    assert 'gateway_auth_failures_total{reason="missing_key"} 1.0' in text
    assert app.metrics.registry.get_sample_value(
        "gateway_requests_total", {"route": "/v1/models", "status_class": "4xx"}) == 1
    # A second app in the same process counts for itself.
    assert create_app(Settings(mode="local")).metrics.registry.get_sample_value(
        "gateway_requests_total", {"route": "/v1/models", "status_class": "4xx"}) is None


_WORKER = """
import sys
from prometheus_client import CollectorRegistry
from gateway.metrics import Metrics
metrics = Metrics(CollectorRegistry())
metrics.ratelimit_fallback.set(1)
metrics.in_flight.inc(3)
metrics.requests.labels("/v1/models", "2xx").inc()
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_dead_workers_gauges_leave_the_aggregate_and_its_counters_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker killed while on the rate-limit fallback (kill -9, mid-request) must not hold
    ``fallback_active`` at 1 and its in-flight requests in the gauge for the rest of the
    gateway's life — seen in the 30-minute cluster soak; its request count stays."""
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored after the test
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    worker = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    metrics = Metrics(CollectorRegistry())  # the worker that answers /metrics

    def rendered(name: bytes) -> float | None:
        body, _ = metrics.render()
        line = next((x for x in body.splitlines() if x.startswith(name + b" ")), None)
        return None if line is None else float(line.rsplit(b" ", 1)[1])

    assert rendered(b"gateway_ratelimit_fallback_active") == 1
    assert rendered(b"gateway_requests_in_flight") == 3
    worker.kill()
    worker.wait(timeout=30)

    assert rendered(b"gateway_ratelimit_fallback_active") in (0, None)
    assert rendered(b"gateway_requests_in_flight") in (0, None)
    assert rendered(b'gateway_requests_total{route="/v1/models",status_class="2xx"}') == 1
    monkeypatch.delenv(MULTIPROC_ENV)


def test_the_cluster_error_kinds_are_exported_at_zero_and_named_by_their_alert() -> None:
    """So that the alert has a series to evaluate before the first cluster error (a counter
    child appears on first use otherwise), and names exactly the kinds counted."""
    metrics = Metrics(CollectorRegistry())
    for kind in REDIS_CLUSTER_ERROR_KINDS:
        assert metrics.registry.get_sample_value(
            "gateway_ratelimit_backend_errors_total", {"kind": kind}) == 0
    alerts = yaml.safe_load((Path(__file__).parent.parent / "deploy" / "prometheus"
                             / "alerts.yml").read_text())
    [rule] = [r for g in alerts["groups"] for r in g["rules"]
              if r.get("alert") == "GatewayRedisClusterErrors"]
    named = re.search(r'kind=~"([^"]+)"', rule["expr"])
    assert named is not None and set(named.group(1).split("|")) == set(REDIS_CLUSTER_ERROR_KINDS)
