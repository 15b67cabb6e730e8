"""Which paths may reach the upstream: only inside its ``/v1`` prefix, in canonical form.

We refuse rather than normalise: a client that sends ``..``, an encoded separator, a doubled
slash or an absolute URL is probing, and the upstream might decode what we did not.
"""

from __future__ import annotations

import re

from gateway.errors import GatewayError

KNOWN_ROUTES = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"}
)
JSON_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
_SEGMENT = re.compile(rb"[A-Za-z0-9._~:@!$'()*+,;=-]+")


def canonical_v1_path(raw_path: bytes) -> str:
    """The path as sent, if it is a canonical path under ``/v1/``; a 400 error otherwise."""
    if not raw_path.startswith(b"/v1/"):
        raise _bad_path()
    segments = raw_path[4:].split(b"/")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in (b".", b".."):
            raise _bad_path()
    return raw_path.decode("ascii")


def route_label(path: str) -> str:
    """A bounded label for metrics: known routes by name, everything else as ``other``."""
    if path in KNOWN_ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return "other"


def _bad_path() -> GatewayError:
    return GatewayError(
        400, "Invalid request path: only canonical paths under /v1/ are allowed.",
        param="path", code="invalid_path",
    )
