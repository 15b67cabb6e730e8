"""deploy/, the Dockerfile and docker-compose.yml, checked by the tools operators use (promtool,
docker-compose, Kubernetes and prometheus-operator schemas) and against gateway/metrics.py."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

from gateway import cli
from gateway.vllm.launcher import PROCESSOR
from tests.deploy import shipped

KUBERNETES_VERSION = "1.30"
COMPOSE_ENV = shipped.ROOT / "deploy" / "compose" / "example.env"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `bash scripts/test` installs it (Debian package)"
    return path


# --- metrics: defined once, all used, nothing used that is not defined -------------------------


def test_every_gateway_metric_is_defined_in_gateway_metrics() -> None:
    assert set(shipped.defined_metrics()) == shipped.metrics_module_families()
    assert shipped.global_registry_families() == set()


def test_every_defined_metric_is_used_by_a_panel_or_an_alert_rule() -> None:
    used = set().union(*(shipped.used_names(q.expr) for q in shipped.queries()))
    unused = sorted(f for f, names in shipped.defined_metrics().items() if not names & used)
    assert not unused, f"metrics without a Grafana panel or alert rule: {unused}"


def test_every_metric_a_panel_or_rule_uses_is_defined() -> None:
    exposed = set().union(*shipped.defined_metrics().values())
    for query in shipped.queries():
        unknown = shipped.used_names(query.expr) - exposed
        assert not unknown, f"{query.source} uses undefined metrics {sorted(unknown)}"


def test_comparison_split_finds_the_signal_of_an_alert() -> None:
    assert shipped.split_comparison('sum(rate(x{a!="b",c=~"d>e"}[5m])) > 3 * (y or z)') == (
        'sum(rate(x{a!="b",c=~"d>e"}[5m]))', ">", "3 * (y or z)")
    assert shipped.split_comparison("max(x)") is None
    with pytest.raises(ValueError, match="more than one"):
        shipped.split_comparison("x > 1 and y < 2")


# --- Grafana ------------------------------------------------------------------------------------


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "dashboards_generate", shipped.DEPLOY / "grafana" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_json_is_what_the_generator_writes() -> None:
    rendered = _load_generator().render()
    assert sorted(rendered) == sorted(shipped.dashboards())
    for name, text in rendered.items():
        assert (shipped.DASHBOARDS / name).read_text() == text, (
            f"{name} is stale: run python deploy/grafana/generate.py")


def test_dashboards_have_instance_and_tier_variables_and_filter_on_instance() -> None:
    titles = set()
    for board in shipped.dashboards().values():
        titles.add(board["title"])
        names = [v["name"] for v in board["templating"]["list"]]
        assert names == ["instance", "tier"]
        uids = {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
        assert uids == {"gateway-prometheus"}
        for panel in board["panels"]:
            for target in panel["targets"]:
                for selector in re.findall(r"\b(?:gateway_[a-z0-9_]+|up)\{[^}]*\}", target["expr"]):
                    assert 'instance=~"$instance"' in selector, (panel["title"], selector)
    assert titles == {"Gateway / Traffic", "Gateway / Limits", "Gateway / Extraction",
                      "Gateway / Evidence store"}
    tiered = [t for b in shipped.dashboards().values() for p in b["panels"] for t in p["targets"]
              if "gateway_tokens_total" in t["expr"]]
    assert tiered and all('tier=~"$tier"' in t["expr"] for t in tiered)


def test_grafana_provisioning_points_at_the_dashboards_and_datasource() -> None:
    provisioning = shipped.DEPLOY / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert [d["uid"] for d in source["datasources"]] == ["gateway-prometheus"]
    provider = yaml.safe_load((provisioning / "dashboards" / "gateway.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((shipped.ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts


# --- Prometheus ---------------------------------------------------------------------------------


def test_promtool_checks_the_rules_and_config() -> None:
    promtool = tool("promtool")
    for args in (["check", "rules", str(shipped.PROMETHEUS / "alerts.yml")],
                 ["check", "config", str(shipped.PROMETHEUS / "prometheus.yml")]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: promtool is really parsing the PromQL."""
    broken = tmp_path / "alerts.yml"
    broken.write_text((shipped.PROMETHEUS / "alerts.yml").read_text().replace(
        "max by (instance) (gateway_ratelimit_fallback_active)",
        "max by (instance) (gateway_ratelimit_fallback_active", 1))
    result = subprocess.run([tool("promtool"), "check", "rules", str(broken)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_every_alert_has_severity_summary_and_runbook() -> None:
    operations = (shipped.ROOT / "README.md").read_text()
    for rule in shipped.alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert f"#### {rule['alert']}" in operations, f"no runbook entry for {rule['alert']}"


# --- docker compose -----------------------------------------------------------------------------


def _compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("docker-compose"), "--env-file", str(COMPOSE_ENV), "-f",
         str(shipped.ROOT / "docker-compose.yml"), *args],
        capture_output=True, text=True, timeout=120, cwd=shipped.ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_compose_file_is_valid() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr
    result = _compose("config", "--services", env={"COMPOSE_PROFILES": "vllm"})
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        "postgres", "redis", "migrate", "gateway-1", "gateway-2", "model-server", "vllm",
        "prometheus", "grafana"}


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run(
        [tool("docker-compose"), "--env-file", str(empty), "config", "-q"],
        capture_output=True, text=True, timeout=120, cwd=shipped.ROOT,
        env={"PATH": "/usr/bin:/bin"})
    assert result.returncode != 0 and "set " in result.stderr


def test_compose_wiring() -> None:
    compose = yaml.safe_load(_compose("config").stdout)
    services = compose["services"]
    gateways = [services["gateway-1"], services["gateway-2"]]
    for service in gateways:
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["environment"]["GATEWAY_REDIS_URL"] == "redis://redis:6379/0"
        assert service["environment"]["GATEWAY_UPSTREAM_URL"] == "http://model-server:8001/v1"
        cli._parser().parse_args(service["command"])
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    cli._parser().parse_args(services["model-server"]["command"])
    assert services["vllm"]["profiles"] == ["vllm"]
    _check_vllm_service(services["vllm"])
    scrape = yaml.safe_load((shipped.PROMETHEUS / "prometheus.yml").read_text())
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "gateway")
    targets = {t for c in job["static_configs"] for t in c["targets"]}
    assert targets == {f"{name}:8000" for name in ("gateway-1", "gateway-2")}


def _check_vllm_service(vllm: dict[str, Any]) -> None:
    """The vLLM profile loads the gateway's watermark processor (V1 interface), with the
    watermark secret and the package it imports."""
    command = vllm["command"]
    assert command[command.index("--logits-processors") + 1] == PROCESSOR
    environment = vllm["environment"]
    assert environment["GATEWAY_WATERMARK_SECRET"]
    assert environment["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    mounts = [m if isinstance(m, str) else f"{m['source']}:{m['target']}" for m in vllm["volumes"]]
    assert any(m.split(":")[1] == environment["PYTHONPATH"] + "/gateway" for m in mounts)


# --- Dockerfile ---------------------------------------------------------------------------------


def _stages() -> dict[str, list[str]]:
    """Stage name → its instructions (continuation lines joined)."""
    text = (shipped.ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if match := re.match(r"FROM \S+ AS (\S+)", line):
            current = stages.setdefault(match.group(1), [])
        current.append(line)
    return stages


def test_dockerfile_images_are_non_root_with_healthchecks_and_valid_commands() -> None:
    stages = _stages()
    assert list(stages)[-1] == "gateway"  # the default target
    for name, port in (("gateway", "8000"), ("model-server", "8001")):
        lines = stages[name]
        assert any(re.fullmatch(r"USER 10001(:10001)?", line) for line in lines), name
        assert any(line.startswith("HEALTHCHECK") and "/healthz" in line for line in lines)
        assert f"EXPOSE {port}" in lines
        cmd = next(line for line in lines if line.startswith("CMD "))
        args = yaml.safe_load(cmd[4:])
        assert cli._parser().parse_args(args).handler
        assert "--port" in args and port in args
    assert any("VARIANT" in line and "onnxruntime-gpu" in line for line in stages["build-gateway"])
    for line in (x for lines in stages.values() for x in lines if x.startswith("COPY ")):
        if "--from=" not in line:
            for source in line.split()[1:-1]:
                if not source.startswith("--"):
                    assert (shipped.ROOT / source).exists(), source


# --- Kubernetes ---------------------------------------------------------------------------------


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((shipped.K8S / "kustomization.yaml").read_text())
    files = [*kustomization["resources"], "migrate-job.yaml"]
    listed = {p.name for p in shipped.K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(files) == listed, "every manifest is in kustomization.yaml (or is the Job)"
    return [(name, doc) for name in files
            for doc in yaml.safe_load_all((shipped.K8S / name).read_text()) if doc]


def _contains(expected: Any, actual: Any) -> bool:
    """Everything in ``expected`` is in ``actual`` (dict keys recursively, lists item by item)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _contains(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            _contains(e, a) for e, a in zip(expected, actual, strict=True))
    return bool(expected == actual)


CRDS = {"PodMonitor": prometheus_operator.PodMonitor,
        "PrometheusRule": prometheus_operator.PrometheusRule}


def validate_manifest(doc: dict[str, Any]) -> None:
    """Kubernetes kinds against the API schemas (strict: unknown fields fail);
    prometheus-operator kinds against the CRD models, unknown fields failing too."""
    if doc["kind"] in CRDS:
        model = CRDS[doc["kind"]].model_validate(doc)
        dumped = model.model_dump(by_alias=True, exclude_none=True, mode="json")
        if not _contains(doc, dumped):
            raise ValueError(f"{doc['kind']} has fields its CRD does not define")
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_manifest_validates_against_its_schema() -> None:
    kinds = set()
    for name, doc in _manifests():
        kinds.add(doc["kind"])
        try:
            validate_manifest(doc)
        except Exception as exc:
            pytest.fail(f"{name}: {exc}")
    assert kinds == {"Namespace", "ConfigMap", "Deployment", "Service",
                     "HorizontalPodAutoscaler", "PodDisruptionBudget", "PodMonitor",
                     "PrometheusRule", "Job", "CronJob"}


@pytest.mark.parametrize("kind", ["Deployment", "PodMonitor"])
def test_validation_rejects_a_misspelled_field(kind: str) -> None:
    doc = next(d for _, d in _manifests() if d["kind"] == kind)
    broken = yaml.safe_load(yaml.safe_dump(doc))
    if kind == "Deployment":
        broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    else:
        broken["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    with pytest.raises(Exception):  # noqa: B017 — each validator raises its own error type
        validate_manifest(broken)


def _pod() -> dict[str, Any]:
    deployment = next(d for _, d in _manifests() if d["kind"] == "Deployment")
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def test_sidecar_pod_exposes_only_the_gateway_and_references_secrets() -> None:
    containers = {c["name"]: c for c in _pod()["containers"]}
    assert set(containers) == {"gateway", "model-server"}
    gateway, model = containers["gateway"], containers["model-server"]
    assert [p["containerPort"] for p in gateway["ports"]] == [8000]
    assert "ports" not in model and "127.0.0.1" in model["args"]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for container in containers.values():
        assert container["resources"]["requests"] and container["resources"]["limits"]
        cli._parser().parse_args(container["args"])
        for var in container.get("env", []):
            if re.search(r"SECRET|TOKEN|DATABASE_URL|REDIS_URL", var["name"]):
                assert "valueFrom" in var and "secretKeyRef" in var["valueFrom"], var["name"]
    config = next(d for _, d in _manifests() if d["kind"] == "ConfigMap")
    assert config["data"]["GATEWAY_UPSTREAM_URL"] == "http://127.0.0.1:8001/v1"
    assert not any(re.search(r"SECRET|TOKEN|PASSWORD", k) for k in config["data"])
    kinds = {d["kind"] for _, d in _manifests()}
    assert "Secret" not in kinds


def test_service_and_monitor_select_the_pod_and_its_gateway_port() -> None:
    docs = {d["kind"]: d for _, d in _manifests()}
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for selector in (docs["Service"]["spec"]["selector"],
                     docs["PodMonitor"]["spec"]["selector"]["matchLabels"],
                     docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    endpoint = docs["PodMonitor"]["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert labels[docs["PodMonitor"]["spec"]["jobLabel"]] == "gateway"  # job="gateway" in rules
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "gateway"


def test_prometheusrule_carries_the_same_rules_as_alerts_yml() -> None:
    rule = yaml.safe_load((shipped.K8S / "prometheusrule.yaml").read_text())
    alerts = yaml.safe_load((shipped.PROMETHEUS / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], (
        "run python deploy/k8s/generate_prometheusrule.py")


def _json_patch(doc: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 ``add`` and ``replace`` (what the vLLM overlay uses), on a copy of ``doc``."""
    doc = yaml.safe_load(yaml.safe_dump(doc))
    for operation in operations:
        *parents, last = operation["path"].strip("/").split("/")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            if last == "-":
                target.append(operation["value"])
            elif operation["op"] == "replace":
                target[int(last)] = operation["value"]
            else:
                target.insert(int(last), operation["value"])
        else:
            assert operation["op"] == "add" or last in target, operation["path"]
            target[last] = operation["value"]
    return doc


def test_vllm_overlay_swaps_in_vllm_with_the_watermark_processor() -> None:
    overlay = shipped.K8S / "vllm"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../"]
    [patch] = kustomization["patches"]
    assert patch["target"] == {"kind": "Deployment", "name": "gateway"}
    base = next(d for _, d in _manifests() if d["kind"] == "Deployment")
    assert base["spec"]["template"]["spec"]["containers"][1]["name"] == "model-server"
    deployment = _json_patch(base, yaml.safe_load((overlay / patch["path"]).read_text()))
    validate_manifest(deployment)
    pod = deployment["spec"]["template"]["spec"]
    gateway, vllm = pod["containers"]
    assert {"name": "GATEWAY_UPSTREAM_KIND", "value": "vllm"} in gateway["env"]
    assert "ports" not in vllm and "127.0.0.1" in vllm["args"]
    assert vllm["args"][vllm["args"].index("--logits-processors") + 1] == PROCESSOR
    env = {var["name"]: var for var in vllm["env"]}
    assert env["GATEWAY_WATERMARK_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == (
        "watermark-secret")
    assert env["VLLM_USE_V2_MODEL_RUNNER"]["value"] == "0"
    [copier] = pod["initContainers"]
    mounts = {m["name"]: m["mountPath"] for m in vllm["volumeMounts"]}
    assert mounts["watermark-package"] == env["PYTHONPATH"]["value"]
    assert copier["command"][-1].rstrip("/") == env["PYTHONPATH"]["value"]
