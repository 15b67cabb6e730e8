"""What the response shaper needs to know about the request it is shaping: the request's
content fingerprint (its noise key, with the account) and, per choice, the stream state.

The fingerprint is keyed on what the model sees, as the gateway computed it: the route, the model
name, the canonical prompt text (:func:`gateway.proxy.validation.prompt_text`) and, for
completions, the ``suffix``. Not on the raw request JSON: junk that changes the JSON but not the
model's input (an unknown key inside a message, a ``prompt`` or ``suffix`` on a chat request,
``response_format: {"type": "text"}``) would otherwise give one prompt fresh noise per request,
and averaging those requests cancels it. Nor on less than the model's input: two different
prompts sharing one noise (as every ``/v1/responses`` request once did) cancel it in their
difference.

Sampling parameters (``logit_bias``, ``temperature``, ``seed``, ``n``, ...) change how the output
is sampled or biased, not what the model is asked, so they stay out of the key too: an attacker
sweeping them for one prompt sees the same noise every time and cannot average it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

COMPLETIONS = "/v1/completions"


@dataclass
class RequestContext:
    fingerprint: bytes
    # stream state: per choice index (or Responses content part), the tokens already shaped,
    # as the prefix chain their noise is keyed on
    prefixes: dict[int, bytes] = field(default_factory=dict)


def fingerprint(route: str, model: str, prompt: str, suffix: str | None = None) -> bytes:
    """The request's noise key: a digest of the route, model, canonical prompt text and (for
    completions) suffix, as one JSON array so that no two tuples encode alike."""
    return hashlib.blake2b(orjson.dumps([route, model, prompt, suffix]), digest_size=16).digest()


def request_fingerprint(route: str, request: dict[str, Any], prompt: str) -> bytes:
    """:func:`fingerprint` of a validated request body and the prompt text the gateway
    extracted from it; ``suffix`` counts only where the model reads it, on completions."""
    model = request.get("model")
    suffix = request.get("suffix") if route == COMPLETIONS else None
    return fingerprint(route, model if isinstance(model, str) else "", prompt,
                       suffix if isinstance(suffix, str) else None)
