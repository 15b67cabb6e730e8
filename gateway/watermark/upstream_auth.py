"""The gateway → model server account header: HMAC-signed, timestamped, single-use.

The gateway names the account it is serving in ``x-gateway-account`` and signs
``version, timestamp, request id, account id`` with the secret it shares with the model server
(``GATEWAY_UPSTREAM_SIGNING_SECRET``). The model server derives the account's watermark key from
it, so a client that reaches the model server directly cannot pick whose key marks its text. A
signature is accepted within ``max_age_s`` of its timestamp and at most once (the request id is
a nonce), so a captured header cannot be replayed. Stdlib only.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict

ACCOUNT_HEADER = "x-gateway-account"
TIMESTAMP_HEADER = "x-gateway-timestamp"
NONCE_HEADER = "x-gateway-nonce"
SIGNATURE_HEADER = "x-gateway-signature"
VERSION = "v1"
MAX_NONCES = 200_000


def signature(secret: bytes, timestamp: str, nonce: str, account_id: str) -> str:
    message = "\n".join((VERSION, timestamp, nonce, account_id)).encode("utf-8")
    return VERSION + "=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, account_id: str, nonce: str, now: float | None = None
         ) -> list[tuple[str, str]]:
    timestamp = str(int(now if now is not None else time.time()))
    return [
        (ACCOUNT_HEADER, account_id), (TIMESTAMP_HEADER, timestamp), (NONCE_HEADER, nonce),
        (SIGNATURE_HEADER, signature(secret, timestamp, nonce, account_id)),
    ]


class VerificationError(Exception):
    """Why a request's account header was refused (safe to show: names no secret)."""


class Verifier:
    """Checks signed account headers; thread-safe. ``verify`` returns the account id."""

    def __init__(self, secret: bytes, max_age_s: float = 60.0) -> None:
        self._secret = secret
        self._max_age_s = max_age_s
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, headers: dict[str, str], now: float | None = None) -> str:
        now = time.time() if now is None else now
        account = headers.get(ACCOUNT_HEADER)
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        given = headers.get(SIGNATURE_HEADER, "")
        if not account or not given or not nonce or not timestamp.isdigit():
            raise VerificationError("missing or malformed gateway signature")
        if abs(now - int(timestamp)) > self._max_age_s:
            raise VerificationError("gateway signature expired")
        if not hmac.compare_digest(given, signature(self._secret, timestamp, nonce, account)):
            raise VerificationError("invalid gateway signature")
        with self._lock:
            self._forget(now)
            if nonce in self._seen:
                raise VerificationError("gateway signature already used")
            self._seen[nonce] = now
        return account

    def _forget(self, now: float) -> None:
        while self._seen:
            nonce, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= self._max_age_s and len(self._seen) < MAX_NONCES:
                break
            del self._seen[nonce]
