"""Writes the Grafana dashboards (deploy/grafana/dashboards/*.json) from the panel lists below.

Run ``python deploy/grafana/generate.py`` after editing; the test suite fails when the JSON files
differ from what this script writes, and runs every query below against a real Prometheus.
Every selector filters on ``$instance`` (and ``$tier`` where the metric has a tier label).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "gateway-prometheus"}
OUT = Path(__file__).parent / "dashboards"
I = 'instance=~"$instance"'  # noqa: E741 — every selector's instance filter
R = "$__rate_interval"

Target = tuple[str, str]  # (PromQL, legend)


def quantiles(metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.9, 0.99),
              selector: str = I) -> list[Target]:
    group = f"le, {by}" if by else "le"
    legend = f"p{{q}} {{{{{by}}}}}" if by else "p{q}"
    return [(f"histogram_quantile({q}, sum by ({group}) "
             f"(rate({metric}_bucket{{{selector}}}[{R}])))",
             legend.format(q=round(q * 100))) for q in qs]


def panel(title: str, targets: list[Target], unit: str = "short", kind: str = "timeseries",
          description: str = "") -> dict[str, Any]:
    return {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
                     "refId": chr(ord("A") + i)} for i, (expr, legend) in enumerate(targets)],
    }


def variables() -> list[dict[str, Any]]:
    def query(name: str, metric: str, label: str) -> dict[str, Any]:
        return {
            "name": name, "label": name, "type": "query", "datasource": DATASOURCE,
            "query": {"query": f"label_values({metric}, {label})", "refId": name},
            "definition": f"label_values({metric}, {label})", "refresh": 2,
            "includeAll": True, "multi": True, "allValue": ".*", "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        }

    return [query("instance", "gateway_requests_in_flight", "instance"),
            query("tier", "gateway_tokens_total", "tier")]


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    laid_out = []
    for i, item in enumerate(panels):
        laid_out.append({**item, "id": i + 1,
                         "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8}})
    return {
        "uid": uid, "title": title, "tags": ["gateway"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": variables()}, "annotations": {"list": []},
        "links": [{"title": "Gateway dashboards", "type": "dashboards", "tags": ["gateway"],
                   "asDropdown": True, "includeVars": True, "keepTime": True}],
        "panels": laid_out,
    }


def traffic() -> dict[str, Any]:
    req = f"gateway_requests_total{{{I}}}"
    return dashboard("gateway-traffic", "Gateway / Traffic", [
        panel("Requests by route", [(f"sum by (route) (rate({req}[{R}]))", "{{route}}")],
              "reqps"),
        panel("Responses by status class",
              [(f"sum by (status_class) (rate({req}[{R}]))", "{{status_class}}")], "reqps"),
        panel("Error ratio", [
            (f'sum(rate(gateway_requests_total{{{I}, status_class="5xx"}}[{R}])) '
             f"/ sum(rate({req}[{R}]))", "5xx"),
            (f'sum(rate(gateway_requests_total{{{I}, status_class="4xx"}}[{R}])) '
             f"/ sum(rate({req}[{R}]))", "4xx"),
        ], "percentunit"),
        panel("Upstream failures by kind", [(
            f"sum by (kind) (rate(gateway_upstream_errors_total{{{I}}}[{R}]))", "{{kind}}")],
            "reqps", description="Connect errors, timeouts and protocol errors (502/504)."),
        panel("Rejected before forwarding, by reason", [(
            f"sum by (reason) (rate(gateway_auth_failures_total{{{I}}}[{R}]))", "{{reason}}")],
            "reqps"),
        panel("Latency (request received to last byte sent)",
              quantiles("gateway_request_duration_seconds"), "s"),
        panel("p99 latency by route",
              quantiles("gateway_request_duration_seconds", "route", (0.99,)), "s"),
        panel("Streams: time to first byte", quantiles("gateway_stream_ttfb_seconds"), "s"),
        panel("Upstream vs gateway overhead", [
            *quantiles("gateway_upstream_duration_seconds", qs=(0.5, 0.99)),
            (f"(sum(rate(gateway_request_duration_seconds_sum{{{I}}}[{R}])) "
             f"- sum(rate(gateway_upstream_duration_seconds_sum{{{I}}}[{R}]))) "
             f"/ sum(rate(gateway_request_duration_seconds_count{{{I}}}[{R}]))",
             "mean gateway overhead"),
        ], "s", description="Upstream percentiles, and the mean time per request spent in the "
           "gateway itself (total minus upstream)."),
        panel("Requests in flight", [(
            f"sum by (instance) (gateway_requests_in_flight{{{I}}})", "{{instance}}")]),
        panel("Tokens by kind and tier", [(
            f'sum by (kind, tier) (rate(gateway_tokens_total{{{I}, tier=~"$tier"}}[{R}]))',
            "{{kind}} {{tier}}")], "short"),
        panel("Replicas up", [(f'up{{job="gateway", {I}}}', "{{instance}}")], kind="stat"),
    ])


def limits() -> dict[str, Any]:
    dec = f"gateway_ratelimit_decisions_total{{{I}}}"
    return dashboard("gateway-limits", "Gateway / Limits", [
        panel("Decisions by outcome", [(f"sum by (outcome) (rate({dec}[{R}]))", "{{outcome}}")],
              "reqps"),
        panel("Rejections by limit", [(
            f'sum by (limit) (rate(gateway_ratelimit_decisions_total{{{I}, outcome="rejected"}}'
            f"[{R}]))", "{{limit}}")], "reqps",
            description="requests, tokens_per_minute, tokens_per_day, concurrency; "
            "'unavailable' when Redis is down under fail_closed."),
        panel("Rejected share", [(
            f'sum(rate(gateway_ratelimit_decisions_total{{{I}, outcome="rejected"}}[{R}])) '
            f"/ sum(rate({dec}[{R}]))", "rejected")], "percentunit"),
        panel("Limiter decision latency",
              quantiles("gateway_ratelimit_decision_seconds", qs=(0.5, 0.99)), "s"),
        panel("Fallback active (Redis unreachable)", [(
            f"max by (instance) (gateway_ratelimit_fallback_active{{{I}}})", "{{instance}}")],
            description="1 while the replica limits locally (fail_open) or refuses "
            "(fail_closed)."),
        panel("Rate-limit backend errors", [(
            f"sum by (kind) (rate(gateway_ratelimit_backend_errors_total{{{I}}}[{R}]))",
            "{{kind}}")], "ops"),
    ])


def extraction() -> dict[str, Any]:
    return dashboard("gateway-extraction", "Gateway / Extraction", [
        panel("Classifier throughput", [
            (f"sum(rate(gateway_detect_observed_total{{{I}}}[{R}]))", "requests observed"),
            (f"sum(rate(gateway_detect_windows_scored_total{{{I}}}[{R}]))", "windows scored"),
        ], "ops"),
        panel("Flags raised by kind", [(
            f"sum by (kind) (increase(gateway_detect_flags_total{{{I}}}[{R}]))", "{{kind}}")],
            description="kind=account: one account's window; kind=campaign: a cluster of "
            "accounts."),
        panel("Verdicts withheld by declared workloads", [(
            f"sum(increase(gateway_detect_flags_withheld_total{{{I}}}[{R}]))", "withheld")],
            description="Scorings over the flag threshold of accounts within their declared "
            "workload's allowance (PUT /admin/v1/accounts/{id}/workload); the first past it "
            "flags."),
        panel("Window score distribution", quantiles("gateway_detect_window_score",
                                                     qs=(0.5, 0.9, 0.99)),
              description="Classifier scores of scored account windows (0 benign, 1 "
              "extraction)."),
        panel("Flags reviewed by decision", [(
            f"sum by (decision) (increase(gateway_detect_flag_reviews_total{{{I}}}[{R}]))",
            "{{decision}}")], description="confirm / dismiss through the admin API."),
        panel("Campaign flags (selected range)", [(
            f'sum(increase(gateway_detect_flags_total{{{I}, kind="campaign"}}[$__range]))',
            "campaigns")], kind="stat"),
        panel("Accounts throttled / suspended by the detector", [(
            f"sum by (action) (increase(gateway_detect_enforcements_total{{{I}}}[{R}]))",
            "{{action}}")]),
        panel("Enforcement actions by reviewers", [(
            f"sum by (action) (increase(gateway_enforcement_actions_total{{{I}}}[{R}]))",
            "{{action}}")], description="warn, throttle, suspend, ban and reinstate through "
            "the admin API."),
        panel("Classifier batch size (windows)",
              quantiles("gateway_detect_batch_windows", qs=(0.5, 0.99))),
        panel("Classifier batch latency", quantiles("gateway_detect_batch_seconds"), "s"),
        panel("Classifier queue", [(
            f"sum by (instance) (gateway_detect_queue_depth{{{I}}})", "{{instance}}")]),
        panel("Shedding and drops", [
            (f"sum(rate(gateway_detect_shed_total{{{I}}}[{R}]))", "scorings postponed"),
            (f"sum(rate(gateway_detect_dropped_total{{{I}}}[{R}]))", "features dropped"),
        ], "ops"),
        panel("Detector errors by stage", [(
            f"sum by (stage) (rate(gateway_detect_errors_total{{{I}}}[{R}]))", "{{stage}}")],
            "ops"),
        panel("Logit-stealing policy refusals", [(
            f"sum by (param) (rate(gateway_policy_refusals_total{{{I}}}[{R}]))", "{{param}}")],
            "reqps"),
        panel("Watermark detections (admin API)", [(
            f"sum by (outcome) (increase(gateway_watermark_detections_total{{{I}}}[{R}]))",
            "{{outcome}}")]),
    ])


def evidence() -> dict[str, Any]:
    return dashboard("gateway-evidence", "Gateway / Evidence store", [
        panel("Writer queue", [(
            f"sum by (instance) (gateway_request_log_queue_depth{{{I}}})", "{{instance}}")]),
        panel("Records written, spilled, replayed", [
            (f"sum(rate(gateway_request_log_written_total{{{I}}}[{R}]))", "written"),
            (f"sum(rate(gateway_request_log_spilled_total{{{I}}}[{R}]))", "spilled"),
            (f"sum(rate(gateway_request_log_replayed_total{{{I}}}[{R}]))", "replayed"),
        ], "ops"),
        panel("Batch write latency", quantiles("gateway_request_log_batch_seconds"), "s"),
        panel("Batch write errors", [(
            f"sum by (instance) (rate(gateway_request_log_write_errors_total{{{I}}}[{R}]))",
            "{{instance}}")], "ops"),
        panel("Spill awaiting replay", [(
            f"sum by (instance) (gateway_request_log_spill_pending_bytes{{{I}}})",
            "{{instance}}")], "bytes"),
        panel("Request-log partitions ready ahead", [(
            f"max by (instance) (gateway_request_log_partitions_ahead_days{{{I}}})",
            "{{instance}}")], "d",
            description="Days of daily request-log partitions beyond today (PostgreSQL). The "
            "writers keep a week; below 2, maintenance is failing and new days' records will "
            "land in the default partition (kept, but read by every query)."),
        panel("Records quarantined", [(
            f"sum by (instance) (increase(gateway_request_log_quarantined_total{{{I}}}[{R}]))",
            "{{instance}}")],
            description="Records the database refused as data (and unreadable spill lines), "
            "set aside in the spill directory instead of stored; list them with "
            "GET /admin/v1/request-log/quarantine."),
    ])


DASHBOARDS = {"traffic": traffic, "limits": limits, "extraction": extraction,
              "evidence": evidence}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"{name}.json": json.dumps(build(), indent=2) + "\n"
            for name, build in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)


if __name__ == "__main__":
    main()
