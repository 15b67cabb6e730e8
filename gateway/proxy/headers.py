"""Header rules: hop-by-hop headers never cross the proxy, credentials are replaced, and the
client's own forwarding headers are never believed upstream."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.errors import invalid_request

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
        b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"proxy-connection",
    }
)
# Never forwarded upstream: ours to set (credential, length, encoding, the client's address) or
# reserved for the gateway's signed headers to the model server.
_DROP_UPSTREAM = HOP_BY_HOP | {
    b"host", b"authorization", b"content-length", b"accept-encoding", b"cookie", b"x-request-id",
    b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto",
    b"x-forwarded-port", b"x-real-ip", b"via",
}
_DROP_DOWNSTREAM = HOP_BY_HOP | {b"content-length", b"server", b"date", b"x-request-id"}
GATEWAY_HEADER_PREFIX = b"x-gateway-"


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in ``Connection:`` (RFC 9110 §7.6.1): hop-by-hop for this hop."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(names)


def upstream_headers(
    client_headers: Iterable[tuple[bytes, bytes]], upstream_auth: str | None, request_id: str,
    client_addr: str | None = None,
) -> Headers:
    """What the upstream is sent: the client's end-to-end headers (names lower-case, as the
    server parsed them), then the gateway's own; ``host`` and the length are the connection's."""
    client_headers = list(client_headers)
    named = connection_tokens(client_headers)
    headers: Headers = [
        (name, value) for name, value in client_headers
        if name not in _DROP_UPSTREAM and name not in named
        and not name.startswith(GATEWAY_HEADER_PREFIX)
    ]
    for name, value in headers:  # the server's parser refuses these; never trusted to have
        if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name or b":" in name:
            raise invalid_request("A header holds a line break.", param="headers")
    headers.append((b"accept-encoding", b"identity"))
    headers.append((b"x-request-id", request_id.encode("latin-1")))
    if client_addr:
        headers.append((b"x-forwarded-for", client_addr.encode("latin-1")))
    if upstream_auth:
        headers.append((b"authorization", b"Bearer " + upstream_auth.encode("latin-1")))
    return headers


def downstream_headers(upstream: Iterable[tuple[bytes, bytes]]) -> Headers:
    upstream = list(upstream)
    named = connection_tokens(upstream)
    kept: Headers = []
    for name, value in upstream:
        lower = name.lower()
        if lower not in _DROP_DOWNSTREAM and lower not in named:
            kept.append((lower, value))
    return kept


def header(scope_headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in scope_headers:
        if key == name:
            return value
    return None
