"""The gateway's half of vLLM mode: each generation request forwarded to vLLM carries, in
``vllm_xargs``, the authenticated account and the HMAC tag vLLM's watermark processor checks
(:mod:`gateway.upstream_identity.xargs_tag`).

The client's own ``vllm_xargs``/``extra_args`` never get here: validation refuses them (400)
before this runs, and this sets the field outright rather than merging, so nothing a client
sends can choose, add to or remove its watermark account.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from gateway.settings import Settings
from gateway.upstream_identity.xargs_tag import stamp, tag_key

XARGS_FIELD = "vllm_xargs"


class VllmXargs:
    """Writes the signed watermark instruction into a generation request's body."""

    def __init__(self, watermark_secret: bytes, routes: Collection[str]) -> None:
        self._key = tag_key(watermark_secret)
        self._routes = frozenset(routes)

    def applies(self, path: str) -> bool:
        return path in self._routes

    def stamp(self, payload: dict[str, Any], account_id: str, request_id: str) -> None:
        """Sets ``payload["vllm_xargs"]`` for ``account_id``; ``request_id`` is the nonce."""
        payload[XARGS_FIELD] = stamp(self._key, account_id, request_id)


def vllm_xargs(settings: Settings, routes: Collection[str]) -> VllmXargs | None:
    """The rewriter when ``GATEWAY_UPSTREAM_KIND=vllm`` (settings guarantee the secret);
    ``routes``: the paths whose requests generate text (the proxy's generation routes)."""
    if settings.upstream_kind != "vllm":
        return None
    assert settings.watermark_secret is not None
    return VllmXargs(settings.watermark_secret.get_secret_value().encode(), routes)
