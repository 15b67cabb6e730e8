"""The gateway's half of vLLM mode: each generation request forwarded to vLLM carries, in
``vllm_xargs``, the authenticated account and the HMAC tag vLLM's watermark processor checks
(:mod:`gateway.watermark.xargs_tag`).

The client's own ``vllm_xargs``/``extra_args`` never get here: validation refuses them (400)
before this runs, and this sets the field outright rather than merging, so nothing a client
sends can choose, add to or remove its watermark account.
"""

from __future__ import annotations

from typing import Any

from gateway.proxy.validation import GENERATION_ROUTES
from gateway.settings import Settings
from gateway.watermark.xargs_tag import stamp, tag_key

XARGS_FIELD = "vllm_xargs"


class VllmXargs:
    """Writes the signed watermark instruction into a generation request's body."""

    def __init__(self, watermark_secret: bytes) -> None:
        self._key = tag_key(watermark_secret)

    def applies(self, path: str) -> bool:
        return path in GENERATION_ROUTES

    def stamp(self, payload: dict[str, Any], account_id: str, request_id: str) -> None:
        """Sets ``payload["vllm_xargs"]`` for ``account_id``; ``request_id`` is the nonce."""
        payload[XARGS_FIELD] = stamp(self._key, account_id, request_id)


def vllm_xargs(settings: Settings) -> VllmXargs | None:
    """The rewriter when ``GATEWAY_UPSTREAM_KIND=vllm`` (settings guarantee the secret)."""
    if settings.upstream_kind != "vllm":
        return None
    assert settings.watermark_secret is not None
    return VllmXargs(settings.watermark_secret.get_secret_value().encode())
