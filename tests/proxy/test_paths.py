"""Only canonical paths under /v1/ reach the upstream."""

import pytest

from gateway.errors import GatewayError
from gateway.proxy.paths import RouteRules, canonical_v1_path, route_label


@pytest.mark.parametrize("path", [
    b"/v1/chat/completions", b"/v1/models/echo-1", b"/v1/files/file-abc123/content",
    b"/v1/fine_tuning/jobs",
])
def test_canonical_paths_pass_unchanged(path: bytes) -> None:
    assert canonical_v1_path(path) == path.decode()


@pytest.mark.parametrize("path", [
    b"/v1/../admin/v1/accounts", b"/v1/models/..", b"/v1/./models", b"/v1//models",
    b"/v1/models%2f..%2fadmin", b"/v1/models%2F", b"/v1/a%5cb", b"/v1/a\\b",
    b"/v2/models", b"/v1", b"http://evil.example/v1/models", b"/v1/models/",
    b"/v1/%2e%2e/admin",
])
def test_traversal_encoded_separators_and_absolute_urls_are_refused(path: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        canonical_v1_path(path)
    assert caught.value.status == 400
    assert caught.value.param == "path"


def test_route_labels_are_bounded() -> None:
    assert route_label("/v1/chat/completions") == "/v1/chat/completions"
    assert route_label("/v1/models/abc") == "/v1/models/{id}"
    assert route_label("/v1/files/file-1") == "other"


# --- which methods may reach the upstream: deny by default ------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"), ("GET", "/v1/models"), ("GET", "/v1/models/echo-1"),
])
def test_understood_routes_and_gets_are_forwarded(method: str, path: str) -> None:
    RouteRules([]).check(method, path)


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/moderations"), ("POST", "/v1/files"), ("POST", "/v1/audio/transcriptions"),
    ("DELETE", "/v1/models/echo-1"), ("PUT", "/v1/chat/completions"),
    ("PATCH", "/v1/responses"), ("HEAD", "/v1/models"), ("OPTIONS", "/v1/models"),
])
def test_every_other_route_is_refused_unless_listed(method: str, path: str) -> None:
    with pytest.raises(GatewayError) as caught:
        RouteRules([]).check(method, path)
    assert (caught.value.status, caught.value.code) == (404, "unsupported_route")


def test_operators_list_extra_routes_exactly_or_by_subtree() -> None:
    rules = RouteRules(["POST /v1/moderations", "delete /v1/files/*"])
    rules.check("POST", "/v1/moderations")
    rules.check("DELETE", "/v1/files/file-1")
    for method, path in [("POST", "/v1/moderations/x"), ("POST", "/v1/files/file-1"),
                         ("DELETE", "/v1/filesystem")]:
        with pytest.raises(GatewayError):
            rules.check(method, path)


@pytest.mark.parametrize("entry", ["/v1/x", "POST v1/x", "POST /admin/v1/accounts", "P0ST /v1/x"])
def test_malformed_passthrough_entries_refuse_to_start(entry: str) -> None:
    with pytest.raises(ValueError, match="GATEWAY_PASSTHROUGH_ROUTES"):
        RouteRules([entry])
