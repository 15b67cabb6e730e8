"""Which paths may reach the upstream: only inside its ``/v1`` prefix, in canonical form.

We refuse rather than normalise: a client that sends ``..``, an encoded separator, a doubled
slash or an absolute URL is probing, and the upstream might decode what we did not.
"""

from __future__ import annotations

import re

from gateway.errors import GatewayError
from gateway.proxy.validation import VALIDATED_ROUTES

KNOWN_ROUTES = VALIDATED_ROUTES | {"/v1/models"}
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


class RouteRules:
    """Which methods may reach the upstream on which paths — deny by default.

    The routes the gateway understands (:data:`VALIDATED_ROUTES`) take ``POST``; any ``GET``
    under ``/v1/`` passes (model listings and the like; with no body); every other method and
    path is refused unless an operator lists it in ``GATEWAY_PASSTHROUGH_ROUTES`` as
    ``"METHOD /v1/path"``, or ``"METHOD /v1/prefix/*"`` for a subtree. A listed route gets
    authentication, the request limits and the request log, but no body validation: list only
    what the upstream serves safely.
    """

    def __init__(self, passthrough: list[str]) -> None:
        self._exact: set[tuple[str, str]] = set()
        self._prefixes: list[tuple[str, str]] = []
        for entry in passthrough:
            method, _, path = entry.strip().partition(" ")
            path = path.strip()
            if not method.isalpha() or not path.startswith("/v1/"):
                raise ValueError(f"GATEWAY_PASSTHROUGH_ROUTES: bad entry {entry!r}")
            if path.endswith("/*"):
                self._prefixes.append((method.upper(), path[:-1]))
            else:
                self._exact.add((method.upper(), path))

    def check(self, method: str, path: str) -> None:
        """Return if ``method path`` may be forwarded; a 404 ``unsupported_route`` otherwise."""
        if method == "POST" and path in VALIDATED_ROUTES:
            return
        if method == "GET":
            return
        if (method, path) in self._exact or any(
            method == m and path.startswith(p) for m, p in self._prefixes
        ):
            return
        raise GatewayError(
            404, f"{method} {path} is not available through this gateway.", param="path",
            code="unsupported_route",
        )


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
