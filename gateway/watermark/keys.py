"""Per-account watermark keys: ``HMAC-SHA256(master secret, account id)``, two 32-bit words.

The master secret is ``GATEWAY_WATERMARK_SECRET``, shared by the gateway (detection) and the model
server (generation). A leaked per-account key reveals nothing about other accounts' keys.

Rotation: set the new secret on the model servers and the gateway, and move the old one to
``GATEWAY_WATERMARK_PREVIOUS_SECRETS``. Text generated before the rotation is still detected and
attributed (the detector tries each secret's keys, and corrects the p-value for the larger number
of keys tried). Drop an old secret once texts generated under it no longer matter (e.g. after the
request-log retention period).
"""

from __future__ import annotations

import hashlib
import hmac

KEY_DOMAIN = b"gateway-watermark-v1\x00"
# The master secret when GATEWAY_WATERMARK_SECRET is unset (local mode only; settings refuse
# production without one). The logprob noise keys derive from the same master secret.
LOCAL_MODE_SECRET = b"gateway-local-mode-watermark-secret"


def derive_key(master_secret: bytes, account_id: str) -> tuple[int, int]:
    """The account's key as ``(hi, lo)`` 32-bit words. Deterministic; never logged."""
    digest = hmac.new(master_secret, KEY_DOMAIN + account_id.encode("utf-8"),
                      hashlib.sha256).digest()
    return int.from_bytes(digest[0:4], "big"), int.from_bytes(digest[4:8], "big")
