"""Header rules: hop-by-hop headers never cross the proxy, credentials are replaced, and the
client's own forwarding headers are never believed upstream."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

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
) -> CIMultiDict[str]:
    client_headers = list(client_headers)
    named = connection_tokens(client_headers)
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in client_headers:
        if (name in _DROP_UPSTREAM or name in named
                or name.startswith(GATEWAY_HEADER_PREFIX)):
            continue
        headers.add(name.decode("latin-1"), value.decode("latin-1"))
    headers["Accept-Encoding"] = "identity"
    headers["X-Request-Id"] = request_id
    if client_addr:
        headers["X-Forwarded-For"] = client_addr
    if upstream_auth:
        headers["Authorization"] = f"Bearer {upstream_auth}"
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
