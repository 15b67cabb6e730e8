"""Headers the gateway adds to upstream requests so the model server knows, verifiably, which
account it is serving (the watermark key is derived from it)."""

from __future__ import annotations

from typing import Protocol

from gateway.settings import Settings


class UpstreamSigner(Protocol):
    def headers(self, account_id: str, request_id: str) -> list[tuple[str, str]]:
        ...


class NoSigner:
    def headers(self, account_id: str, request_id: str) -> list[tuple[str, str]]:
        return []


def build_signer(settings: Settings) -> UpstreamSigner:
    return NoSigner()
