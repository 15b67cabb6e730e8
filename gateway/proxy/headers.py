"""Header rules: hop-by-hop headers never cross the proxy, credentials are replaced."""

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
# Never forwarded upstream: ours to set (credential, length, encoding) or reserved for the
# gateway's signed headers to the model server.
_DROP_UPSTREAM = HOP_BY_HOP | {
    b"host", b"authorization", b"content-length", b"accept-encoding", b"cookie", b"x-request-id",
}
_DROP_DOWNSTREAM = HOP_BY_HOP | {b"content-length", b"server", b"date", b"x-request-id"}
GATEWAY_HEADER_PREFIX = b"x-gateway-"


def upstream_headers(
    client_headers: Iterable[tuple[bytes, bytes]], upstream_auth: str | None, request_id: str
) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in client_headers:
        if name in _DROP_UPSTREAM or name.startswith(GATEWAY_HEADER_PREFIX):
            continue
        headers.add(name.decode("latin-1"), value.decode("latin-1"))
    headers["Accept-Encoding"] = "identity"
    headers["X-Request-Id"] = request_id
    if upstream_auth:
        headers["Authorization"] = f"Bearer {upstream_auth}"
    return headers


def downstream_headers(upstream: Iterable[tuple[bytes, bytes]]) -> Headers:
    return [(n.lower(), v) for n, v in upstream if n.lower() not in _DROP_DOWNSTREAM]


def header(scope_headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in scope_headers:
        if key == name:
            return value
    return None
