"""API key format and hashing.

A key is ``sk-gw-`` + 8 visible characters (the prefix support staff may see) + 32 secret ones.
Only an HMAC-SHA256 of the whole key, keyed with ``GATEWAY_KEY_HASH_SECRET``, is stored: a
leaked database alone does not allow offline guessing, and lookup stays one indexed equality.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import uuid

KEY_SCHEME = "sk-gw-"
PREFIX_LENGTH = len(KEY_SCHEME) + 8
_ALPHABET = string.ascii_letters + string.digits


def generate_key() -> str:
    return KEY_SCHEME + "".join(secrets.choice(_ALPHABET) for _ in range(40))


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


def hash_key(key: str, secret: bytes) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def new_id(kind: str) -> str:
    """Opaque, sortable-enough identifiers: ``acct_…``, ``key_…``."""
    return f"{kind}_{uuid.uuid4().hex[:24]}"
