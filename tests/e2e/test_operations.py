"""Health, readiness and metrics endpoints as an orchestrator and Prometheus see them."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Stack, StackFactory
from tests.support.servers import free_port


def test_ready_when_database_and_upstream_answer(stack: Stack) -> None:
    response = httpx.get(stack.base + "/readyz")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert (checks["database"], checks["upstream"]) == (True, True)
    assert checks["ratelimit"] == "in_process"
    assert httpx.get(stack.base + "/healthz").json() == {"status": "ok"}


def test_not_ready_while_the_upstream_is_down(make_stack: StackFactory) -> None:
    with make_stack(upstream_url=f"http://127.0.0.1:{free_port()}/v1") as down:
        response = httpx.get(down.base + "/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["upstream"] is False
        assert httpx.get(down.base + "/healthz").status_code == 200


def test_metrics_count_requests_by_route_and_status_class_without_account_labels(
    stack: Stack,
) -> None:
    _, key = stack.new_account()
    headers = {"Authorization": f"Bearer {key}"}
    httpx.get(stack.base + "/v1/models", headers=headers)
    httpx.get(stack.base + "/v1/models", headers={"Authorization": "Bearer sk-gw-nope"})
    text = httpx.get(stack.base + "/metrics").text
    assert 'gateway_requests_total{route="/v1/models",status_class="2xx"}' in text
    assert 'gateway_auth_failures_total{reason="invalid_key"}' in text
    assert "gateway_requests_in_flight" in text
    assert "gateway_request_log_queue_depth" in text
    assert "acct_" not in text and key not in text


def test_openapi_documents_the_admin_api(stack: Stack) -> None:
    spec = httpx.get(stack.base + "/openapi.json").json()
    assert "/admin/v1/accounts" in spec["paths"]
    assert "/admin/v1/accounts/{account_id}/actions" in spec["paths"]
