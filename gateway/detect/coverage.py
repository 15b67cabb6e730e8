"""Per-account prompt coverage: did this account ask anything it had not asked before?

Extraction explores the input space; automation circles its own. An evaluation harness re-runs
one fixed question set hours later (other seeds, other checkpoints), a CI job sends one prompt
on every push; a distiller needs fresh prompts all the time. What the gateway can observe of that
difference is whether an account's set of distinct requests keeps growing or saturates and
recurs, and this module is that observation, stored compactly per account: a Bloom filter
(:data:`BITS` bits, :data:`HASHES` probes) of the account's request fingerprints, with a count
of the distinct fingerprints it holds. The risk policy
(:func:`gateway.detect.risk.update`) gives a scoring no upward move when every request it newly
covers is one the account had already sent.

A request's fingerprint (:func:`fingerprint`) is an exact, non-linear hash (BLAKE2b, 64 bits)
of the WHOLE prompt — not the bounded head and tail the features read, so text varied where the
features do not look still makes a request new — and of the parameters that change what its
answer holds (route, temperature, max_tokens, n, logprobs, top_logprobs). A request with
``logit_bias`` has no fingerprint (0, "unknown"): the detector records how many tokens were
biased, not which, so a logit-bias sweep over one prompt is new information every time.

What is fail-closed (counts as new, so the risk rises as it always did): an unknown
fingerprint; a scoring with no newly covered request (nothing positive to discount on); an
account whose filter holds :data:`CAPACITY` distinct fingerprints (larger than a benchmark
subset whose re-runs this discounts; its filter would also stop being exact); any state that
is missing or unreadable. Past :data:`CAPACITY` the filter stops growing and every request
covered counts as new, in the count too: the count (:func:`count`) is the account's distinct
requests, exact below the capacity and an upper bound above it — what a declared workload's
allowance (:mod:`gateway.domain.workloads`) is spent against, so it may only err high. The
state lives in the account's risk state, in the Redis store too
(a replica that lost it would count every re-run new), and survives a reviewer's dismissal.

Attacker's view. The discount is binary per scoring: one new request among those a scoring
covers makes the whole scoring new, so interleaving re-asks among fresh prompts buys nothing;
a scoring withheld from rising harvested only answers to prompts the account had already
harvested. Every rising scoring covers at most ``score_every`` new requests, as before, so the
fresh prompts an account can harvest before its risk reaches a threshold are unchanged by any
mix of repeats; what repeats buy is time, which waiting buys as well (the evidence decays with
time, not with requests). Colliding a fresh prompt with an earlier one is a second preimage of
a 64-bit BLAKE2b (a birthday search over the attacker's own prompts, ~2^32 hashes, yields one
extra answer). A filter false positive (a fresh request judged seen) is 1 in ~100 at capacity,
and a scoring needs all its new requests judged seen. Re-asking a bounded set (rejection
sampling over it, re-runs) harvests only that bounded set: that is the discount, and it is fair.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Final

from gateway.records import RequestRecord

BITS: Final = 4096
"""Filter size: 512 bytes per account that has been scored."""
HASHES: Final = 4
CAPACITY: Final = 400
"""Distinct fingerprints an account may hold and still be discounted when it repeats them (a
benchmark subset's size; at capacity the filter's false-positive rate is about 1%)."""
_COUNT = struct.Struct("<H")
SIZE: Final = _COUNT.size + BITS // 8
_MASK64: Final = (1 << 64) - 1


def digest(prompt: str) -> bytes:
    """16 bytes of BLAKE2b of the whole prompt (computed where the whole prompt still exists)."""
    return hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def fingerprint(record: RequestRecord, prompt_digest: bytes) -> int:
    """The request's 64-bit fingerprint: its prompt and every parameter that changes what the
    answer holds; 0 (unknown, always new) for a request with ``logit_bias``."""
    if record.logit_bias_size:
        return 0
    params = repr((record.route, record.temperature, record.max_tokens, record.n,
                   bool(record.logprobs), record.top_logprobs)).encode()
    value = int.from_bytes(hashlib.blake2b(prompt_digest + params, digest_size=8).digest(),
                           "little")
    return value or 1


def _probes(fp: int) -> list[int]:
    h1, h2 = fp & 0xFFFFFFFF, (fp >> 32) | 1
    return [((h1 + i * h2) & _MASK64) % BITS for i in range(HASHES)]


MAX_COUNT: Final = 0xFFFF


def count(state: bytes) -> int:
    """Distinct requests the account has sent (0 for an empty or unreadable state): exact below
    :data:`CAPACITY` but for filter false positives, every covered request counted above it and
    every unknown one (:func:`fingerprint` 0) always, :data:`MAX_COUNT` at most."""
    return _COUNT.unpack_from(state)[0] if len(state) == SIZE else 0


def _counted(state: bytes, held: int) -> bytes:
    return _COUNT.pack(min(held, MAX_COUNT)) + state[_COUNT.size:]


def cover(state: bytes, fingerprints: Iterable[int]) -> tuple[bool, bytes]:
    """(whether any of ``fingerprints`` is new to the account, the state with them added).

    New also when: there are none, one is unknown (0), or the state is at :data:`CAPACITY`
    (then only its count changes: by every fingerprint given)."""
    fps = list(fingerprints)
    if len(state) != SIZE:
        state = bytes(SIZE)
    held = count(state)
    if not fps:
        return True, state
    if held >= CAPACITY:
        return True, _counted(state, held + len(fps))
    bits = bytearray(state)
    novel = False
    for i, fp in enumerate(fps):
        if held >= CAPACITY:  # the filter is full: the rest count as new
            held += len(fps) - i
            break
        if fp == 0:  # unknown (a logit-bias sweep): new, and counted, every time
            novel = True
            held += 1
            continue
        probes = _probes(fp)
        offset = _COUNT.size
        if all(bits[offset + p // 8] >> (p % 8) & 1 for p in probes):
            continue
        novel = True
        for p in probes:
            bits[offset + p // 8] |= 1 << (p % 8)
        held += 1
    return novel, _counted(bytes(bits), held)
