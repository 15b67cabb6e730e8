"""The gateway → model server request signature: HMAC over the exact request, timestamped,
single-use.

The gateway names the account it is serving in ``x-gateway-account`` and signs, with the secret
it shares with the model server (``GATEWAY_UPSTREAM_SIGNING_SECRET``), the newline-joined

    v2, METHOD, path?query, hex SHA-256 of the body bytes, account id, timestamp, nonce

(the path and query as on the request line, still percent-encoded). The model server derives
the account's watermark key from it, so a client that reaches the model server directly can
neither pick whose key marks its text nor reuse a captured signature for another request: the
signature holds only for that method, path, query and body. It is accepted within ``max_age_s``
of its timestamp and once (the gateway's request id is the nonce). The v1 format, which signed
no request, is refused.

The memory of used nonces (:class:`NonceStore`) never forgets one whose signature could still
be accepted: :class:`InProcessNonces` evicts only expired nonces and, when full of live ones,
refuses with :class:`ReplayCacheUnavailable` rather than forget (fail closed). Several model
servers behind one gateway share a Redis store (:mod:`gateway.modelserver.replay`) so that a
request accepted by one is refused by all. Stdlib only.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import threading
import time
from collections.abc import Mapping
from typing import Protocol

ACCOUNT_HEADER = "x-gateway-account"
TIMESTAMP_HEADER = "x-gateway-timestamp"
NONCE_HEADER = "x-gateway-nonce"
SIGNATURE_HEADER = "x-gateway-signature"
VERSION = "v2"
MAX_NONCES = 200_000
CLOCK_SKEW_S = 5.0
"""How long past its expiry on this server's clock a nonce is still remembered, so that another
model server whose clock runs a little behind cannot accept a signature the shared memory has
already forgotten."""


class VerificationError(Exception):
    """Why a request's signature was refused (safe to show: names no secret)."""


class ReplayCacheUnavailable(Exception):
    """The nonce memory cannot record a nonce (full of live ones, or unreachable): the request
    is refused, since accepting it could let a replay through."""


def signature(secret: bytes, method: str, target: str, body: bytes, account_id: str,
              timestamp: str, nonce: str) -> str:
    """``v2=<hex HMAC-SHA256>`` of the request; ``target`` is the path plus ``?query``."""
    fields = (VERSION, method, target, hashlib.sha256(body).hexdigest(), account_id, timestamp,
              nonce)
    if any("\n" in field or "\r" in field for field in fields):
        raise ValueError("a signed field contains a newline")
    message = "\n".join(fields).encode("utf-8")
    return VERSION + "=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, account_id: str, nonce: str, method: str, target: str, body: bytes,
         now: float | None = None) -> list[tuple[str, str]]:
    """The headers that authorise exactly this request (``target``: path and ``?query`` as
    sent, ``body``: the exact bytes sent) for ``account_id``, once."""
    timestamp = str(int(now if now is not None else time.time()))
    return [
        (ACCOUNT_HEADER, account_id), (TIMESTAMP_HEADER, timestamp), (NONCE_HEADER, nonce),
        (SIGNATURE_HEADER,
         signature(secret, method, target, body, account_id, timestamp, nonce)),
    ]


class NonceStore(Protocol):
    """Memory of the nonces already accepted, until their signatures expire."""

    async def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        """Records ``nonce`` until ``expires_at`` (Unix time); False if it is already there.
        Raises :class:`ReplayCacheUnavailable` when it cannot tell or cannot record it."""
        ...

    async def aclose(self) -> None:
        ...


class InProcessNonces:
    """One process's nonce memory, at most ``capacity`` live nonces; thread-safe. Evicts only
    expired nonces: full of live ones, it refuses new ones instead of forgetting."""

    def __init__(self, capacity: int = MAX_NONCES) -> None:
        self._capacity = capacity
        self._expiry: dict[str, float] = {}
        self._queue: list[tuple[float, str]] = []  # a heap by expiry
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    async def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        with self._lock:
            self._forget_expired(now)
            if nonce in self._expiry:
                return False
            if len(self._expiry) >= self._capacity:
                raise ReplayCacheUnavailable("replay cache full")
            self._expiry[nonce] = expires_at
            heapq.heappush(self._queue, (expires_at, nonce))
            return True

    def _forget_expired(self, now: float) -> None:
        while self._queue and self._queue[0][0] < now:
            _, nonce = heapq.heappop(self._queue)
            del self._expiry[nonce]

    async def aclose(self) -> None:
        return None


class Verifier:
    """Checks request signatures; ``verify`` returns the signed account id."""

    def __init__(self, secret: bytes, max_age_s: float = 60.0,
                 nonces: NonceStore | None = None) -> None:
        self._secret = secret
        self._max_age_s = max_age_s
        self._nonces = nonces if nonces is not None else InProcessNonces()

    async def verify(self, headers: Mapping[str, str], method: str, target: str, body: bytes,
                     now: float | None = None) -> str:
        """Verifies the signature (lower-case ``headers``) against the request as received:
        ``target`` is its raw path and ``?query``, ``body`` its exact bytes. Only an authentic,
        fresh signature reaches the nonce memory, so forgeries cannot fill it."""
        now = time.time() if now is None else now
        account, timestamp, nonce = self._authentic(headers, method, target, body, now)
        expires_at = int(timestamp) + self._max_age_s + CLOCK_SKEW_S
        if not await self._nonces.claim(nonce, expires_at, now):
            raise VerificationError("gateway signature already used")
        return account

    def _authentic(self, headers: Mapping[str, str], method: str, target: str, body: bytes,
                   now: float) -> tuple[str, str, str]:
        account = headers.get(ACCOUNT_HEADER, "")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        given = headers.get(SIGNATURE_HEADER, "")
        if not (account and given and nonce and timestamp.isascii() and timestamp.isdigit()):
            raise VerificationError("missing or malformed gateway signature")
        if not given.startswith(VERSION + "="):
            raise VerificationError("unsupported gateway signature version")
        if abs(now - int(timestamp)) > self._max_age_s:
            raise VerificationError("gateway signature expired")
        try:
            expected = signature(self._secret, method, target, body, account, timestamp, nonce)
        except ValueError:
            raise VerificationError("missing or malformed gateway signature") from None
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise VerificationError("invalid gateway signature")
        return account, timestamp, nonce
