"""Request policy: checks on a decoded request body before it is forwarded (e.g. caps on
``logit_bias``, ``top_logprobs`` and ``n`` against logit stealing). A refusal raises an
OpenAI-shaped 400 naming the parameter."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.auth.principal import Principal
from gateway.settings import Settings


class RequestPolicy(Protocol):
    def check(self, principal: Principal, route: str, payload: dict[str, Any]) -> None:
        ...


class OpenPolicy:
    """No caps beyond the body validation every request gets."""

    def check(self, principal: Principal, route: str, payload: dict[str, Any]) -> None:
        return None


def build_policy(settings: Settings) -> RequestPolicy:
    return OpenPolicy()
