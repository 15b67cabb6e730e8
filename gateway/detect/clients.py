"""The clients inside one account's window: which requests came from which caller of a key.

Stdlib + numpy. A key is often shared — two people of a team, a person's chat client and the
team's coding tool, a nightly batch — and each caller sends its own sampling parameters from its
own network. A window straddling a switch of caller mixes two benign shapes into one that the
classifier has learnt to read as an evasion (benign dilution, parameters changed mid-harvest),
and one key used by two clients was flagged in up to all of its accounts
(bench/adaptive_suite.md, phase 8). So a window is scored per client (:func:`parts`): each
client's requests as a window of their own, and the account's score is the highest of them. A
harvest run beside a benign client is then scored on its own, undiluted.

What an attacker could do with it, and what stops it:

- draw parameters per request, so that every request is a "client" of its own: a window with
  more than :data:`MAX_CLIENTS` clients is scored whole, as before (that spread is itself what
  the ``chat_params`` evasion looks like);
- keep a harvesting client under ``min_requests`` per window beside a benign one: a client
  is scored alone from :data:`PART_FLOOR` requests, undiluted, and the clients smaller than
  that together when they are that many. What is left is fewer than the floor's requests of
  the window, read once their client reaches the floor within the window. A client that never
  does — two answers taken with other parameters or from another network beside 62 requests
  of cover, or after six of cover before leaving — goes unread: at most ``PART_FLOOR - 1``
  requests of any window scored (left open: bench/adaptive_suite.md, phase 17).

Why not score the small clients mixed, as this module once did: two benign callers mixed in one
young window are what benign dilution looks like to the classifier (harvest beside cover), and
two people starting their day on one key were flagged from their first window, though each
alone scores near 0 (bench/adaptive_suite.md, phase 17). Only clients below the floor are still
read together (three callers of two requests each, say).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from gateway.detect.behaviour import PARAMS, param_keys
from gateway.detect.features import FEATURE_NAMES, RequestFeatures

MAX_CLIENTS: Final = 3
PART_FLOOR: Final = 3
"""The fewest requests a client is read alone from. The classifier reads three requests of a
person as benign in 9 windows of 10 (median score 0.01) and a harvest's as a harvest in 3 of 4
or more; two requests of a person score over 0.9 in a third of windows (phase 17)."""
_COLUMNS: Final = [FEATURE_NAMES.index(n) for n in PARAMS]
_MIX: Final = np.array([(0x9E3779B97F4A7C15 ^ (i * 0xBF58476D1CE4E5B9) | 1) % 2**64
                        for i in range(1 + len(PARAMS))], dtype=np.uint64)


def client_keys(items: Sequence[RequestFeatures]) -> npt.NDArray[np.int32]:
    """One row per request: its network and its sampling parameters, rounded as behavioural
    profiles round them (:func:`gateway.detect.behaviour.param_keys`). The prompt and the
    answer are not part of it: a client is how a caller calls, not what it asks."""
    vectors = np.concatenate([it.vector for it in items]).reshape(-1, len(FEATURE_NAMES)) \
        if items else np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    networks = np.array([it.network for it in items], dtype=np.uint32).view(np.int32)
    out: npt.NDArray[np.int32] = np.concatenate(
        [networks[:, None], param_keys(vectors[:, _COLUMNS])], axis=1)
    return out


def parts_batch(windows: Sequence[Sequence[RequestFeatures]], min_requests: int
                ) -> list[list[Sequence[RequestFeatures]]]:
    """:func:`parts` of many windows, their client keys computed in one pass."""
    keys = client_keys([it for items in windows for it in items])
    out: list[list[Sequence[RequestFeatures]]] = []
    start = 0
    for items in windows:
        out.append(_split(items, keys[start:start + len(items)], min_requests))
        start += len(items)
    return out


def part_floor(min_requests: int) -> int:
    """The fewest requests of one client scored as a window of their own: :data:`PART_FLOOR`,
    or ``min_requests`` where that is lower."""
    return min(PART_FLOOR, min_requests)


def parts(items: Sequence[RequestFeatures], min_requests: int
          ) -> list[Sequence[RequestFeatures]]:
    """The windows to score for ``items`` (one account's window, oldest first): ``[items]`` for
    one client or more than :data:`MAX_CLIENTS`; else each client of at least
    :func:`part_floor` requests, then the smaller clients' requests together if they are that
    many (fewer left over are not read this time). Order within a part is kept; a single part
    may be less than the whole window. One client — nearly every account — costs one
    comparison of the keys."""
    return _split(items, client_keys(items), min_requests)


def _split(items: Sequence[RequestFeatures], keys: npt.NDArray[np.int32], min_requests: int
           ) -> list[Sequence[RequestFeatures]]:
    if len(keys) == 0 or bool((keys == keys[0]).all()):
        return [items]
    # One 64-bit number per key (a wrapping dot product with odd constants): a 1-D unique is
    # several times cheaper than ``np.unique(axis=0)``; a collision would only merge two clients.
    _, inverse = np.unique(keys.astype(np.uint64) @ _MIX, return_inverse=True)
    count = np.bincount(inverse.reshape(-1)).tolist()
    if len(count) > MAX_CLIENTS:
        return [items]
    floor = part_floor(min_requests)
    client: list[int] = inverse.reshape(-1).tolist()
    out: list[Sequence[RequestFeatures]] = [
        [it for it, c in zip(items, client, strict=True) if c == k]
        for k in sorted((k for k, n in enumerate(count) if n >= floor), key=client.index)]
    rest = [it for it, c in zip(items, client, strict=True) if count[c] < floor]
    if len(rest) >= floor:
        out.append(rest)
    return out or [items]
