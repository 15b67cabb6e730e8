"""What the response shaper needs to know about the request it is shaping: the request's
content fingerprint (its noise key, with the account) and, per choice, the stream state."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

# Parameters that change what the model is asked, as opposed to how its output is sampled or
# biased. The noise key leaves out the latter (logit_bias, temperature, seed, n, ...), so an
# attacker sweeping them for one prompt sees the same noise every time and cannot average it.
CONTENT_FIELDS = ("model", "messages", "prompt", "suffix", "tools", "response_format")


@dataclass
class RequestContext:
    fingerprint: bytes
    # stream state: per choice index (or Responses content part), the tokens already shaped,
    # as the prefix chain their noise is keyed on
    prefixes: dict[int, bytes] = field(default_factory=dict)


def fingerprint(payload: dict[str, Any]) -> bytes:
    content = {k: payload.get(k) for k in CONTENT_FIELDS if k in payload}
    return hashlib.blake2b(orjson.dumps(content, option=orjson.OPT_SORT_KEYS),
                           digest_size=16).digest()
