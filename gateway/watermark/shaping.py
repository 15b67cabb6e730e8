"""Response shaping: where the gateway rewrites upstream responses (e.g. perturbs logprobs).

``shape`` receives a decoded JSON response or one decoded stream chunk and returns the object to
send. A shaper that is not ``active`` is skipped entirely, so the bytes pass through untouched.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.settings import Settings


class ResponseShaper(Protocol):
    active: bool

    def shape(self, account_id: str, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        ...


class IdentityShaper:
    active = False

    def shape(self, account_id: str, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        return payload


def build_shaper(settings: Settings) -> ResponseShaper:
    return IdentityShaper()
