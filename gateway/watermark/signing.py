"""Headers the gateway adds to upstream requests so the model server knows, verifiably, which
account it is serving (the watermark key is derived from it). See
:mod:`gateway.watermark.upstream_auth` for the format."""

from __future__ import annotations

from typing import Protocol

from gateway.settings import Settings
from gateway.watermark.upstream_auth import sign


class UpstreamSigner(Protocol):
    def headers(self, account_id: str, request_id: str) -> list[tuple[str, str]]:
        ...


class NoSigner:
    def headers(self, account_id: str, request_id: str) -> list[tuple[str, str]]:
        return []


class HmacSigner:
    """Signs the account id with ``GATEWAY_UPSTREAM_SIGNING_SECRET``; request id = nonce."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def headers(self, account_id: str, request_id: str) -> list[tuple[str, str]]:
        return sign(self._secret, account_id, request_id)


def build_signer(settings: Settings) -> UpstreamSigner:
    secret = settings.upstream_signing_secret
    if secret is None:
        return NoSigner()
    return HmacSigner(secret.get_secret_value().encode())
