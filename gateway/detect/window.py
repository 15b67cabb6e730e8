"""Account windows: the most recent requests of one account, as model inputs and statistics.

Only stdlib + numpy. A window is at most ``size`` :class:`RequestFeatures`, oldest first. From
it come (1) a per-request sequence — each request's own features plus its place in the window:
gap since the previous request, PRADA-style minimum SimHash distance to every earlier request,
near-duplicate, template-reuse and clustered-content markers — and (2) window statistics:
timing regularity, the distance distribution (with a Shapiro-Francia normality statistic,
PRADA's test), diversity, coverage, template reuse, clustered content, and the mean and spread
of every request feature.

An artifact records the names of the inputs it was trained on (:data:`SEQ_NAMES`,
:data:`STAT_NAMES`) and reads its columns by name (:mod:`gateway.detect.scoring`), so one
trained before an input was added keeps scoring as it did. A name is never reused for another
meaning.

The binary encoding (:func:`encode` / :func:`decode`) is what the Redis store keeps per request:
fixed-size, about 140 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from statistics import NormalDist
from typing import Final, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from gateway.detect.features import F32, FEATURE_NAMES, MINHASH_K, N_FEATURES, RequestFeatures

SEQ_EXTRA: Final = ("gap_log", "min_distance", "near_duplicate", "template_share", "clustered")
SEQ_NAMES: Final = FEATURE_NAMES + SEQ_EXTRA
N_SEQ: Final = len(SEQ_NAMES)
STAT_SPECIAL: Final = (
    "requests_log",
    "gap_mean_log",
    "gap_std_log",
    "gap_cv",
    "burst_share",
    "distance_mean",
    "distance_std",
    "distance_normality",
    "near_duplicate_share",
    "diversity",
    "template_reuse",
    "coverage",
)
STAT_EXTRA: Final = ("clustered_share",)
STAT_NAMES: Final = (
    STAT_SPECIAL + tuple(f"mean_{n}" for n in FEATURE_NAMES)
    + tuple(f"std_{n}" for n in FEATURE_NAMES) + STAT_EXTRA
)
N_STATS: Final = len(STAT_NAMES)
_CLUSTERED_SHARE: Final = STAT_NAMES.index("clustered_share")
NEAR_DUPLICATE_BITS: Final = 6
TEMPLATE_SHARE: Final = 0.25
CLUSTER_SHARE: Final = 0.6
"""A MinHash value that recurs in two or more of a window's requests but in at most this share
of them is *clustered content*: text the account sends again in part — queries perturbed around
a few seeds (PRADA), a conversation's history — as opposed to a template, which recurs in
(nearly) every request, and to text sent once. A template with a different item in every
request (a labelling batch) has little (where the item outweighs the template in a slot, the
template's value recurs in only part of the window); probing around seeds behind a template
keeps its own (bench/adaptive_suite.md, phase 15)."""

_HEADER = struct.Struct(f"<dQI{N_FEATURES}f{MINHASH_K}IB")


_FINGERPRINT = struct.Struct("<Q")


def encode(item: RequestFeatures) -> bytes:
    """Fixed-size binary form; the request id (ASCII, at most 64 bytes) follows the header, and
    the coverage fingerprint (8 bytes) follows the id. Records written before the fingerprint
    existed end at the id and decode with fingerprint 0 (unknown); code that predates it reads
    the id by its length and ignores the trailing 8 bytes (rolling upgrades both ways)."""
    rid = item.request_id.encode()[:64]
    return _HEADER.pack(item.ts, item.simhash, item.network, *item.vector.tolist(),
                        *item.minhash.tolist(), len(rid)) + rid \
        + _FINGERPRINT.pack(item.fingerprint)


def decode(blob: bytes) -> RequestFeatures:
    values = _HEADER.unpack_from(blob)
    ts, sim, network = values[0], values[1], values[2]
    vector = np.array(values[3:3 + N_FEATURES], dtype=np.float32)
    mh = np.array(values[3 + N_FEATURES:3 + N_FEATURES + MINHASH_K], dtype=np.uint32)
    rid_len = values[-1]
    end = _HEADER.size + rid_len
    rid = blob[_HEADER.size:end].decode()
    fingerprint = _FINGERPRINT.unpack_from(blob, end)[0] \
        if len(blob) >= end + _FINGERPRINT.size else 0
    return RequestFeatures(rid, ts, vector, sim, mh, network, fingerprint)


@lru_cache(maxsize=1024)
def _normal_scores(n: int) -> npt.NDArray[np.float64]:
    """Blom's expected normal order statistics for a sample of ``n``."""
    dist = NormalDist()
    return np.array([dist.inv_cdf((i - 0.375) / (n + 0.25)) for i in range(1, n + 1)])


def shapiro_francia(values: npt.NDArray[np.float64]) -> float:
    """W' in [0, 1]: near 1 for a normal-looking sample; 1.0 when undefined (n < 5, constant)."""
    n = len(values)
    if n < 5 or float(np.ptp(values)) < 1e-9:
        return 1.0
    x = np.sort(values)
    m = _normal_scores(n)
    corr = float(np.corrcoef(x, m)[0, 1])
    return corr * corr


@dataclass(frozen=True, slots=True)
class WindowArrays:
    seq: F32
    """(size, N_SEQ), zero-padded at the end."""
    mask: F32
    """(size,), 1 for real requests."""
    stats: F32
    """(N_STATS,)"""
    signature: npt.NDArray[np.uint32]
    """Per MinHash slot, the window's most shared value: the account's template sketch."""
    signature_strength: float
    """Mean share of the window carrying the signature's values (1: one template throughout)."""
    network: int
    """The most frequent client network."""
    min_distance: npt.NDArray[np.float64]
    """Per request, the PRADA minimum distance (first request excluded)."""


def _masked_mean(x: npt.NDArray[np.float64], m: npt.NDArray[np.bool_], axis: int | tuple[int, ...],
                 default: float) -> npt.NDArray[np.float64]:
    count = m.sum(axis=axis)
    total = np.where(m, x, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), default)


def _masked_std(x: npt.NDArray[np.float64], m: npt.NDArray[np.bool_], axis: int
                ) -> npt.NDArray[np.float64]:
    mean = _masked_mean(x, m, axis, 0.0)
    dev = (x - np.expand_dims(mean, axis)) ** 2
    return np.sqrt(_masked_mean(dev, m, axis, 0.0))


def _normality(real: npt.NDArray[np.float64], counts: npt.NDArray[np.int64]
               ) -> npt.NDArray[np.float64]:
    """Shapiro-Francia W' per row of ``real`` (valid prefix of length ``counts``), grouped by
    length so that each group is one vectorised computation."""
    out = np.ones(len(real))
    for n in np.unique(counts):
        if n < 5:
            continue
        rows = np.flatnonzero(counts == n)
        x = np.sort(real[rows, :n], axis=1)
        x = x - x.mean(axis=1, keepdims=True)
        m = _normal_scores(int(n))
        m = m - m.mean()
        denom = np.sqrt((x * x).sum(axis=1) * (m * m).sum())
        ok = denom > 1e-9 * np.sqrt(n)
        corr = np.where(ok, (x * m).sum(axis=1) / np.where(ok, denom, 1.0), 1.0)
        out[rows] = np.where(np.ptp(x, axis=1) < 1e-9, 1.0, corr * corr)
    return out


def _pair_mean(bits: npt.NDArray[np.uint8], pairs: npt.NDArray[np.bool_]
               ) -> npt.NDArray[np.float64]:
    """Mean SimHash distance (bits / 64) over each window's pairs of requests; 0.5 without
    pairs. Summed as integers: exactly the float mean of the distances, at a fraction of it."""
    count = pairs.sum(axis=(1, 2))
    total = np.where(pairs, bits, np.uint8(0)).sum(axis=(1, 2), dtype=np.int64) / 64
    out: npt.NDArray[np.float64] = np.where(count > 0, total / np.maximum(count, 1), 0.5)
    return out


def _slot_counts(mh: npt.NDArray[np.uint32], mask: npt.NDArray[np.bool_]
                 ) -> npt.NDArray[np.int64]:
    """For every real request and MinHash slot, how many requests of the same window share its
    value in that slot (0 for padding). Each (window, slot) column is sorted on its own (64
    values: faster than one sort of the whole batch), equal values form runs, and each request
    gets the length of its run. Padding takes the largest value, which a real request can take
    too (an empty prompt's slots), so that run is shortened by the window's padding."""
    size = mh.shape[1]
    top = np.uint32(0xFFFFFFFF)
    keys = np.where(mask[:, None, :], mh.transpose(0, 2, 1), top)
    order = np.argsort(keys, axis=2)
    ordered = np.take_along_axis(keys, order, axis=2)
    starts = np.ones(ordered.shape, dtype=bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    run = np.cumsum(starts.ravel()) - 1
    lengths = np.bincount(run)[run].reshape(ordered.shape) if run.size else run.reshape(
        ordered.shape)
    padding = (size - mask.sum(axis=1))[:, None, None]
    lengths = lengths - np.where(ordered == top, padding, 0)
    counts = np.empty(ordered.shape, dtype=np.int64)
    np.put_along_axis(counts, order, lengths, axis=2)
    out: npt.NDArray[np.int64] = counts.transpose(0, 2, 1) * mask[:, :, None]
    return out


def build_batch(batch: Sequence[Sequence[RequestFeatures]], size: int) -> list[WindowArrays]:
    """:func:`build` for many windows at once: one vectorised pass instead of one per window
    (this is what keeps the micro-batcher cheap per window)."""
    lists = [list(items[-size:]) for items in batch]
    b = len(lists)
    ns = np.array([len(x) for x in lists], dtype=np.int64)
    idx = np.arange(size)
    mask = idx[None, :] < ns[:, None]
    vec = np.zeros((b, size, N_FEATURES), dtype=np.float32)
    ts = np.zeros((b, size))
    sims = np.zeros((b, size), dtype=np.uint64)
    mh = np.zeros((b, size, MINHASH_K), dtype=np.uint32)
    every = [it for items in lists for it in items]  # in the row-major order of ``mask``
    if every:
        vec[mask] = np.concatenate([it.vector for it in every]).reshape(-1, N_FEATURES)
        ts[mask] = [it.ts for it in every]
        sims[mask] = np.array([it.simhash for it in every], dtype=np.uint64)
        mh[mask] = np.concatenate([it.minhash for it in every]).reshape(-1, MINHASH_K)
    nf = np.maximum(ns, 1).astype(np.float64)

    gaps = np.diff(ts, axis=1).clip(min=0.0)
    gap_ok = mask[:, 1:]
    log_gaps = np.log1p(gaps)
    gap_log = np.concatenate([np.zeros((b, 1)), log_gaps], axis=1) / 10
    # Hamming distances as bit counts (one byte each); divided by 64 only where averaged.
    bits = np.bitwise_count(sims[:, :, None] ^ sims[:, None, :])
    earlier = np.tril(np.ones((size, size), dtype=bool), k=-1)[None] & mask[:, None, :]
    dmin = np.where(earlier, bits, np.uint8(64)).min(axis=2) / 64
    dmin[:, 0] = 0.5
    near = (dmin * 64 <= NEAR_DUPLICATE_BITS) & (idx[None, :] > 0) & mask
    counts = _slot_counts(mh, mask)  # (b, size, K): how often each value recurs in its slot
    need = np.maximum(2.0, TEMPLATE_SHARE * ns)[:, None, None]
    shared = (counts >= need).mean(axis=2) * mask
    clustered = ((counts >= 2) & (counts <= CLUSTER_SHARE * ns[:, None, None])).mean(axis=2) \
        * mask
    best = counts.argmax(axis=1)  # (b, K)
    signature = np.take_along_axis(mh, best[:, None, :], axis=1)[:, 0, :]
    strength = (counts.max(axis=1) / nf[:, None]).mean(axis=1)

    seq = np.zeros((b, size, N_SEQ), dtype=np.float32)
    seq[:, :, :N_FEATURES] = vec
    seq[:, :, N_FEATURES] = gap_log * mask
    seq[:, :, N_FEATURES + 1] = dmin * mask
    seq[:, :, N_FEATURES + 2] = near
    seq[:, :, N_FEATURES + 3] = shared
    seq[:, :, N_FEATURES + 4] = clustered

    real_ok = mask.copy()
    real_ok[:, 0] = False
    real = dmin[:, 1:]
    pairs = np.triu(np.ones((size, size), dtype=bool), k=1)[None] & mask[:, :, None] \
        & mask[:, None, :]
    gaps_mean = _masked_mean(gaps, gap_ok, 1, 0.0)
    cv = np.where(ns > 2, np.minimum(_masked_std(gaps, gap_ok, 1) / (gaps_mean + 1e-6), 5.0)
                  / 5, 0.0)
    vmask = mask[:, :, None]
    vec64 = vec.astype(np.float64)
    stats = np.zeros((b, N_STATS), dtype=np.float32)
    stats[:, :len(STAT_SPECIAL)] = np.stack([
        np.log1p(ns) / 5,
        _masked_mean(log_gaps, gap_ok, 1, 0.0) / 10,
        _masked_std(log_gaps, gap_ok, 1) / 10,
        cv,
        _masked_mean((gaps < 2.0).astype(np.float64), gap_ok, 1, 0.0),
        _masked_mean(real, real_ok[:, 1:], 1, 0.5),
        _masked_std(real, real_ok[:, 1:], 1),
        _normality(real, ns - 1),
        _masked_mean(near[:, 1:].astype(np.float64), real_ok[:, 1:], 1, 0.0),
        _pair_mean(bits, pairs),
        _masked_mean(shared, mask, 1, 0.0),
        np.array([len(set(mh[i, :n, 0].tolist())) for i, n in enumerate(ns)]) / nf,
    ], axis=1)
    stats[:, len(STAT_SPECIAL):len(STAT_SPECIAL) + N_FEATURES] = (
        np.where(vmask, vec64, 0).sum(axis=1) / nf[:, None])
    stats[:, len(STAT_SPECIAL) + N_FEATURES:len(STAT_SPECIAL) + 2 * N_FEATURES] = np.sqrt(
        np.where(vmask, (vec64 - stats[:, None, len(STAT_SPECIAL):len(STAT_SPECIAL)
                                       + N_FEATURES]) ** 2, 0).sum(axis=1) / nf[:, None])
    stats[:, _CLUSTERED_SHARE] = _masked_mean(clustered, mask, 1, 0.0)
    out = []
    for i, items in enumerate(lists):
        n = int(ns[i])
        networks = [it.network for it in items]
        network = max(set(networks), key=networks.count) if networks else 0
        out.append(WindowArrays(seq[i], mask[i].astype(np.float32), stats[i],
                                signature[i] if n else np.zeros(MINHASH_K, np.uint32),
                                float(strength[i]) if n else 0.0, network,
                                real[i, :max(n - 1, 0)].copy()))
    return out


Template = tuple[npt.NDArray[np.uint32], float, int]
"""(signature, signature_strength, network): a window's campaign sketch (:func:`sketch`)."""


def sketch(items: Sequence[RequestFeatures]) -> Template:
    """(signature, signature_strength, network) of a window, exactly as :func:`build_batch`
    computes them, without the model inputs: what a young account's campaign sketch needs on
    every request, at a fraction of a window's cost."""
    if not items:
        return np.zeros(MINHASH_K, np.uint32), 0.0, 0
    mh = np.array([it.minhash for it in items], dtype=np.uint32)  # (n, K)
    counts = (mh[:, None, :] == mh[None, :, :]).sum(axis=1)  # (n, K)
    signature = mh[counts.argmax(axis=0), np.arange(MINHASH_K)]
    strength = float((counts.max(axis=0) / len(items)).mean())
    networks = [it.network for it in items]
    return signature, strength, max(set(networks), key=networks.count)


class _Timed(Protocol):
    @property
    def ts(self) -> float: ...


T = TypeVar("T", bound=_Timed)


def in_turn(accounts: Sequence[Sequence[T]], size: int) -> list[T]:
    """Several accounts' requests as one account would have sent them: each account's latest
    requests (an equal share of ``size``) in turn, in order of first appearance, every account
    at its own pace (its own gaps; its median gap before its first request).

    Merging by timestamp instead would interleave unrelated accounts into a burst no single
    client sends: a crowd of people, or of one IDE plugin's users, would read as a fast,
    wide-ranging harvester. Taken in turn, what is judged is what one operator running all of
    them would look like: their prompts' spread and volume at their own rhythm."""
    ordered = sorted((sorted(items, key=lambda i: i.ts) for items in accounts if items),
                     key=lambda items: items[0].ts)
    if not ordered:
        return []
    share = max(1, -(-size // len(ordered)))
    kept = [items[-share:] for items in ordered]
    out: list[T] = []
    cursor = kept[0][0].ts
    for items in kept:
        ts = np.array([it.ts for it in items])
        gaps = np.diff(ts)
        lead = float(np.median(gaps)) if len(gaps) else 60.0
        start = cursor + (lead if out else 0.0)
        out += [replace(it, ts=start + float(t - ts[0]))  # type: ignore[type-var]
                for it, t in zip(items, ts, strict=True)]
        cursor = out[-1].ts
    return out[-size:]


def build(items: Sequence[RequestFeatures], size: int) -> WindowArrays:
    """Model inputs and statistics of the last ``size`` items (oldest first)."""
    return build_batch([items], size)[0]


def stack(windows: Sequence[WindowArrays]) -> tuple[F32, F32, F32]:
    """Batch arrays (seq, mask, stats) for the scorer."""
    return (
        np.stack([w.seq for w in windows]),
        np.stack([w.mask for w in windows]),
        np.stack([w.stats for w in windows]),
    )
