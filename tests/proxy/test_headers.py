"""Header rules: hop-by-hop headers, including those a ``Connection:`` header names, never cross
the proxy in either direction, and a client's forwarding headers never reach the upstream."""

from __future__ import annotations

import pytest

from gateway.errors import GatewayError
from gateway.proxy.headers import Headers, downstream_headers, upstream_headers

pytestmark = pytest.mark.unit


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


def test_headers_named_by_the_clients_connection_header_are_not_forwarded() -> None:
    sent = upstream_headers([
        (b"connection", b"keep-alive, X-Secret-Hop , x-other"), (b"x-secret-hop", b"1"),
        (b"x-other", b"2"), (b"x-kept", b"3"),
    ], None, "req_1")
    names = {name for name, _ in sent}
    assert not names & {b"x-secret-hop", b"x-other", b"connection"}
    assert values(sent, b"x-kept") == [b"3"]


def test_headers_named_by_the_upstreams_connection_header_are_not_returned() -> None:
    kept = dict(downstream_headers([
        (b"Connection", b"x-internal"), (b"X-Internal", b"topology"), (b"content-type", b"a/b"),
    ]))
    assert kept == {b"content-type": b"a/b"}


def test_client_forwarding_headers_are_replaced_by_the_address_the_gateway_saw() -> None:
    sent = upstream_headers([
        (b"x-forwarded-for", b"6.6.6.6"), (b"forwarded", b"for=6.6.6.6"),
        (b"x-real-ip", b"6.6.6.6"), (b"x-forwarded-host", b"evil"), (b"via", b"1.1 evil"),
    ], None, "req_1", client_addr="10.1.2.3")
    assert values(sent, b"x-forwarded-for") == [b"10.1.2.3"]
    for name in (b"forwarded", b"x-real-ip", b"x-forwarded-host", b"via"):
        assert values(sent, name) == []


def test_credentials_and_gateway_headers_are_the_gateways_own() -> None:
    sent = upstream_headers([
        (b"authorization", b"Bearer sk-gw-client"), (b"x-gateway-account", b"acct_victim"),
        (b"connection", b"authorization"), (b"x-request-id", b"spoofed"),
    ], "upstream-cred", "req_1")
    assert values(sent, b"authorization") == [b"Bearer upstream-cred"]
    assert values(sent, b"x-request-id") == [b"req_1"]
    assert values(sent, b"x-gateway-account") == []


@pytest.mark.parametrize("hostile", [
    (b"x-note", b"a\r\nx-gateway-account: acct_victim"), (b"x-note", b"a\nb"),
    (b"x-no\r\nte", b"1"), (b"x-a: b", b"1"),
], ids=["crlf-value", "lf-value", "crlf-name", "colon-name"])
def test_a_header_that_would_split_the_upstream_request_is_refused(
    hostile: tuple[bytes, bytes],
) -> None:
    """The server's parser never hands these on; should another front end do so, the request is
    refused (400), never written upstream where it would add headers of the client's choosing."""
    with pytest.raises(GatewayError) as refused:
        upstream_headers([hostile], None, "req_1")
    assert (refused.value.status, refused.value.param) == (400, "headers")
