"""The gateway's watermark instruction to vLLM: four ``vllm_xargs`` entries and their HMAC tag.

The gateway (which authenticated the client) writes into each generation request it forwards

    {"watermark_account": id, "watermark_expires": unix s, "watermark_nonce": request id,
     "watermark_tag": hex HMAC-SHA256}

after refusing any ``vllm_xargs``/``extra_args`` the client sent (400), so clients can neither
choose nor remove their watermark through the gateway. vLLM copies ``vllm_xargs`` into
``SamplingParams.extra_args``; the watermark processor's ``validate_params`` (run in vLLM's API
server at admission) checks the tag and **refuses the request (HTTP 400) when it is missing,
malformed, expired, forged or already used** — so a client that reaches vLLM directly, around
the gateway, gets no text at all rather than unwatermarked text, and cannot pick another
account's key. The decision is deliberate: an unwatermarked answer would be exactly what an
extractor who found the model server's port wants.

The tag key is derived from ``GATEWAY_WATERMARK_SECRET`` (which vLLM needs anyway to derive the
per-account keys) under its own domain, so it is never equal to an account's watermark key. The
tag covers the account, the expiry and the nonce. It cannot cover the prompt (vLLM's
``validate_params`` sees only the sampling parameters), so a tag captured on the
gateway→vLLM link could be replayed with another prompt until it expires — to watermark text
with *that same* account's key: each nonce is therefore accepted once per vLLM API-server
process (:class:`NonceMemory`: bounded, never forgets a live nonce, refuses when full), and
lifetimes are short (``max_age_s``, 60 s by default). With ``--api-server-count`` above 1 each
API-server process has its own memory (a replay could then succeed once per process). Stdlib
only: vLLM's API server imports it.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

ACCOUNT = "watermark_account"
EXPIRES = "watermark_expires"
NONCE = "watermark_nonce"
TAG = "watermark_tag"
FIELDS = (ACCOUNT, EXPIRES, NONCE, TAG)
TAG_DOMAIN = b"gateway-vllm-xargs-v1\x00"
VERSION = "v1"
DEFAULT_MAX_AGE_S = 60
MAX_ACCOUNT_CHARS = 256
MAX_NONCES = 200_000
CLOCK_SKEW_S = 5
_NONCE = re.compile(r"[A-Za-z0-9_-]{8,128}")


class TagError(ValueError):
    """Why a request's watermark tag was refused (safe to show: names no secret, no account).
    A ``ValueError``, which vLLM turns into an HTTP 400."""


def tag_key(watermark_secret: bytes) -> bytes:
    """The HMAC key for tags, derived from the watermark master secret (its own domain)."""
    return hmac.new(watermark_secret, TAG_DOMAIN, hashlib.sha256).digest()


def tag(key: bytes, account: str, expires: int, nonce: str) -> str:
    message = "\n".join((VERSION, account, str(expires), nonce)).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def stamp(key: bytes, account: str, nonce: str, max_age_s: int = DEFAULT_MAX_AGE_S,
          now: float | None = None) -> dict[str, str | int]:
    """The ``vllm_xargs`` that make vLLM watermark this request with ``account``'s key, once."""
    expires = int(now if now is not None else time.time()) + max_age_s
    return {ACCOUNT: account, EXPIRES: expires, NONCE: nonce,
            TAG: tag(key, account, expires, nonce)}


class NonceMemory:
    """The nonces already accepted, each until its tag expires; thread-safe. Evicts only expired
    nonces: full of live ones, it refuses new ones (fail closed) rather than forget."""

    def __init__(self, capacity: int = MAX_NONCES) -> None:
        self._capacity = capacity
        self._expiry: dict[str, float] = {}
        self._queue: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        """True and recorded if ``nonce`` is new; False if seen. :class:`TagError` when full."""
        with self._lock:
            while self._queue and self._queue[0][0] < now:
                del self._expiry[heapq.heappop(self._queue)[1]]
            if nonce in self._expiry:
                return False
            if len(self._expiry) >= self._capacity:
                raise TagError("watermark tag memory full; retry later")
            self._expiry[nonce] = expires_at
            heapq.heappush(self._queue, (expires_at, nonce))
            return True


class TagVerifier:
    """Checks tags (in vLLM's API server); ``verify`` returns the account, each nonce once."""

    def __init__(self, key: bytes, max_age_s: int = DEFAULT_MAX_AGE_S,
                 nonces: NonceMemory | None = None) -> None:
        self._key = key
        self._max_age_s = max_age_s
        self._nonces = nonces if nonces is not None else NonceMemory()

    def authentic(self, extra: Mapping[str, Any] | None, now: float | None = None) -> str:
        """The account an authentic, unexpired tag names (does not consume the nonce)."""
        now = time.time() if now is None else now
        extra = extra or {}
        account, expires, nonce, given = (extra.get(name) for name in FIELDS)
        if not (isinstance(account, str) and 0 < len(account) <= MAX_ACCOUNT_CHARS
                and "\n" not in account and isinstance(expires, int)
                and not isinstance(expires, bool) and isinstance(nonce, str)
                and _NONCE.fullmatch(nonce) and isinstance(given, str)):
            raise TagError("this server only serves requests forwarded by the gateway "
                           "(missing or malformed watermark tag)")
        if expires < now or expires > now + self._max_age_s + CLOCK_SKEW_S:
            raise TagError("expired watermark tag")
        expected = tag(self._key, account, expires, nonce)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise TagError("invalid watermark tag")
        return account

    def verify(self, extra: Mapping[str, Any] | None, now: float | None = None) -> str:
        """:meth:`authentic`, then records the nonce: a second use is refused."""
        now = time.time() if now is None else now
        account = self.authentic(extra, now)
        assert extra is not None
        if not self._nonces.claim(str(extra[NONCE]), int(extra[EXPIRES]) + CLOCK_SKEW_S, now):
            raise TagError("watermark tag already used")
        return account
