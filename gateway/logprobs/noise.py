"""Keyed, deterministic noise and rounding for logprobs returned to clients (stdlib only).

The noise of one candidate token is a pure function of (account key, request content
fingerprint, the completion's tokens before it, the candidate): the same query always gets the
same noise, so averaging repeats removes nothing, and sweeping ``logit_bias`` over one prompt
(which the fingerprint leaves out) leaves every token's noise fixed. Within one position the
noisy values are forced non-increasing in the original order, so the top tokens keep their
ranking (ties possible after rounding), and stay ≤ 0.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from statistics import NormalDist

NOISE_DOMAIN = b"gateway-logprob-noise-v1\x00"
_NORMAL = NormalDist()
_SCALE = float(2**64)


def account_noise_key(master_secret: bytes, account_id: str) -> bytes:
    return hmac.new(master_secret, NOISE_DOMAIN + account_id.encode(), hashlib.sha256).digest()


def next_prefix(prefix: bytes, token: str) -> bytes:
    """The position state after ``token``: a running hash of the completion so far."""
    return hashlib.blake2b(prefix + token.encode("utf-8", "surrogatepass"),
                           digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class NoiseSpec:
    scale: float
    decimals: int


def unit_noise(key: bytes, fingerprint: bytes, prefix: bytes, token: str) -> float:
    """A standard normal deviate, deterministic in its arguments."""
    digest = hashlib.blake2b(fingerprint + prefix + token.encode("utf-8", "surrogatepass"),
                             key=key[:64], digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / _SCALE
    return _NORMAL.inv_cdf(u)


def perturb_position(key: bytes, fingerprint: bytes, prefix: bytes,
                     candidates: list[tuple[str, float]], spec: NoiseSpec) -> dict[str, float]:
    """Noisy, rounded, rank-preserving logprobs for one position's candidates (token, logprob).

    Duplicate token strings (e.g. distinct byte tokens shown alike) get the same value.
    """
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i][1])
    out: dict[str, float] = {}
    ceiling = 0.0
    for i in order:
        token, value = candidates[i]
        if token in out:
            continue
        noisy = value + spec.scale * unit_noise(key, fingerprint, prefix, token)
        noisy = min(round(noisy, spec.decimals), ceiling)
        out[token] = noisy
        ceiling = noisy
    return out
