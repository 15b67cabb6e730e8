"""Headers the gateway adds to upstream requests so the model server knows, verifiably, which
account it is serving (the watermark key is derived from it). The signature covers the exact
request — method, path and query as sent upstream, and the final body bytes — so it cannot be
reused for another one. See :mod:`gateway.upstream_identity.signature` for the format."""

from __future__ import annotations

from typing import Protocol

from gateway.settings import Settings
from gateway.upstream_identity.signature import sign


class UpstreamSigner(Protocol):
    """``path``: the upstream request's path and ``?query`` as on the request line (e.g. yarl's
    ``URL.raw_path_qs``); ``body``: the exact bytes sent (``b""`` for none)."""

    def headers(
        self, account_id: str, request_id: str, method: str, path: str, body: bytes
    ) -> list[tuple[str, str]]:
        ...


class NoSigner:
    def headers(
        self, account_id: str, request_id: str, method: str, path: str, body: bytes
    ) -> list[tuple[str, str]]:
        return []


class HmacSigner:
    """Signs the request and account with ``GATEWAY_UPSTREAM_SIGNING_SECRET``; the request id is
    the nonce."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def headers(
        self, account_id: str, request_id: str, method: str, path: str, body: bytes
    ) -> list[tuple[str, str]]:
        return sign(self._secret, account_id, request_id, method, path, body)


def build_signer(settings: Settings) -> UpstreamSigner:
    secret = settings.upstream_signing_secret
    if secret is None:
        return NoSigner()
    return HmacSigner(secret.get_secret_value().encode())
