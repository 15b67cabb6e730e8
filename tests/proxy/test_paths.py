"""Only canonical paths under /v1/ reach the upstream."""

import pytest

from gateway.errors import GatewayError
from gateway.proxy.paths import canonical_v1_path, route_label


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
