"""What deploy/ ships, read the way Prometheus and Grafana read it: every PromQL expression of
every dashboard panel and alert rule, and the metric names they use."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
K8S = DEPLOY / "k8s"

# Grafana's variables, as "All" and a typical rate window; the test Prometheus scrapes every
# second, so one minute holds plenty of samples.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h",
    "$instance": ".*", "$tier": ".*",
}
METRIC_TOKEN = re.compile(r"\bgateway_[a-z0-9_]+\b")
OTHER_METRICS = frozenset({"up"})
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


@dataclass(frozen=True)
class Query:
    source: str
    """Where it comes from: ``dashboard 'title' / panel 'title' / A`` or ``rule NAME``."""
    expr: str
    """As shipped (Grafana variables substituted)."""
    signal: str
    """What must return data: the expression itself, or an alert's side before its comparison."""


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def split_comparison(expr: str) -> tuple[str, str, str] | None:
    """``(left, operator, right)`` at the one top-level comparison of ``expr`` (outside
    brackets, braces, parentheses and strings), or None when there is none."""
    depth, quote, found = 0, "", []
    i = 0
    while i < len(expr):
        char = expr[i]
        if quote:
            quote = "" if char == quote and expr[i - 1] != "\\" else quote
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            op = next((o for o in COMPARISONS if expr.startswith(o, i)), None)
            if op is not None:
                found.append((i, op))
                i += len(op)
                continue
        i += 1
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(f"more than one top-level comparison in {expr!r}")
    at, op = found[0]
    return expr[:at].strip(), op, expr[at + len(op):].strip()


def queries() -> list[Query]:
    out = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = substitute(target["expr"])
                out.append(Query(f"dashboard {name} / panel {panel['title']!r} / "
                                 f"{target['refId']}", expr, expr))
    for rule in alert_rules():
        expr = " ".join(rule["expr"].split())
        split = split_comparison(expr)
        out.append(Query(f"rule {rule['alert']}", expr, split[0] if split else expr))
    return out


def used_names(expr: str) -> set[str]:
    """Every ``gateway_`` name in ``expr`` outside label matchers' quoted values."""
    return set(METRIC_TOKEN.findall(re.sub(r'"[^"]*"', '""', expr)))


@functools.cache
def app_metrics() -> Metrics:
    """The metrics of the app as its factory builds it (built, not started: no I/O)."""
    return create_app(Settings(mode="local")).metrics


def defined_metrics() -> dict[str, set[str]]:
    """Each ``gateway_`` metric family the app's registry exports → its series names."""
    exposed = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
               "summary": ("_sum", "_count"), "info": ("_info",)}
    return {family.name: {family.name + suffix for suffix in exposed[family.type]}
            for family in app_metrics().registry.collect()
            if family.name.startswith("gateway_")}


def metrics_module_families() -> set[str]:
    """Families of the metric objects a :class:`gateway.metrics.Metrics` defines."""
    return {family.name for value in vars(app_metrics()).values()
            if isinstance(value, MetricWrapperBase) for family in value.describe()}


def global_registry_families() -> set[str]:
    """``gateway_`` families on client_python's global registry: none, metrics are injected."""
    return {family.name for family in REGISTRY.collect() if family.name.startswith("gateway_")}
