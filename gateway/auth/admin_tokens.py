"""Admin tokens and roles: ``viewer`` < ``reviewer`` < ``admin``.

Tokens are kept only as SHA-256 digests and compared with :func:`hmac.compare_digest` against
every configured digest, so neither a token's length nor which entry matched leaks through
timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.domain.roles import Role
from gateway.settings import Settings

BOOTSTRAP_NAME = "bootstrap-admin"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made an admin call: the token's configured name and its role."""

    name: str
    role: Role


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    actor: Actor


class AdminTokens:
    """The configured admin tokens; plaintext is not kept after construction."""

    def __init__(self, tokens: Iterable[tuple[str, str, Role]]) -> None:
        """``tokens`` are ``(name, token, role)``; empty tokens are ignored (they never match)."""
        self._entries = tuple(
            _Entry(_digest(token), Actor(name, role)) for name, token, role in tokens if token
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminTokens:
        """``GATEWAY_ADMIN_TOKEN`` as ``bootstrap-admin`` (role admin), then ``admin_tokens``."""
        tokens: list[tuple[str, str, Role]] = []
        if settings.admin_token is not None:
            tokens.append((BOOTSTRAP_NAME, settings.admin_token.get_secret_value(), "admin"))
        tokens.extend(
            (extra.name, extra.token.get_secret_value(), extra.role)
            for extra in settings.admin_tokens
        )
        return cls(tokens)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str | None) -> Actor | None:
        """The actor holding ``token``, or None; timing does not reveal where or if it matched."""
        if not token:
            return None
        digest = _digest(token)
        found: Actor | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest) and found is None:
                found = entry.actor
        return found
