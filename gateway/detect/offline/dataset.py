"""Simulator sessions → features → windows: the training and evaluation data. numpy only.

Windows are taken at several points of each session (prefixes), as the runtime would see them:
first at ``min_requests`` and then every ``score_every`` requests, so the model learns to judge
short histories too (what "flagged within N requests" needs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.detect import features, window
from gateway.detect.offline.simulate import Session, to_record
from gateway.records import RequestRecord

ToRecord = Callable[[Session, int], tuple[RequestRecord, str]]

WINDOW = 64
MIN_REQUESTS = 8
SCORE_EVERY = 4


@dataclass
class Windows:
    seq: npt.NDArray[np.float32]
    mask: npt.NDArray[np.float32]
    stats: npt.NDArray[np.float32]
    labels: npt.NDArray[np.float32]
    session: npt.NDArray[np.int64]
    """Index of the session each window comes from."""
    position: npt.NDArray[np.int64]
    """How many requests of the session the window has seen."""
    prada: npt.NDArray[np.float32]
    """1 - Shapiro-Francia W' of the min-distance distribution: PRADA's statistic."""
    ts: npt.NDArray[np.float64]
    """Time of the window's last request."""

    def __len__(self) -> int:
        return len(self.labels)


def session_features(session: Session, record: ToRecord = to_record
                     ) -> list[features.RequestFeatures]:
    """``record`` turns a request into what the gateway records: the simulator's by default,
    :func:`gateway.detect.offline.real_traffic.to_record` for sessions built from real text."""
    found = features.extract_batch([record(session, i) for i in range(len(session.requests))])
    return [f for f in found if f is not None]


def positions(n: int, min_requests: int = MIN_REQUESTS, every: int = SCORE_EVERY,
              sparse: bool = False) -> list[int]:
    """Prefix lengths at which a session of ``n`` requests is scored (sparse: for training)."""
    points = list(range(min_requests, n + 1, every))
    if sparse:
        points = [p for p in points if p <= 32 or p % 16 == 0]
    return points


def build_windows(sessions: Sequence[Session], *, size: int = WINDOW,
                  min_requests: int = MIN_REQUESTS, every: int = SCORE_EVERY,
                  sparse: bool = False, record: ToRecord = to_record) -> Windows:
    seqs, masks, stats, labels, sess, pos, prada, ts = [], [], [], [], [], [], [], []
    for i, session in enumerate(sessions):
        items = session_features(session, record)
        points = positions(len(items), min_requests, every, sparse)
        built = window.build_batch([items[:p] for p in points], size)
        for p, w in zip(points, built, strict=True):
            seqs.append(w.seq)
            masks.append(w.mask)
            stats.append(w.stats)
            labels.append(session.label)
            sess.append(i)
            pos.append(p)
            prada.append(1.0 - window.shapiro_francia(w.min_distance))
            ts.append(items[p - 1].ts)
    return Windows(
        np.stack(seqs), np.stack(masks), np.stack(stats), np.array(labels, np.float32),
        np.array(sess, np.int64), np.array(pos, np.int64), np.array(prada, np.float32),
        np.array(ts, np.float64),
    )


def concat(parts: Sequence[tuple[Windows, int]]) -> Windows:
    """Window sets of consecutive session lists (each with its number of sessions) as one: the
    session indices of a part are offset by the sessions before it, so they index the
    concatenated session list."""
    offsets = np.cumsum([0] + [n for _, n in parts[:-1]])
    sets = [w for w, _ in parts]
    return Windows(
        np.concatenate([w.seq for w in sets]), np.concatenate([w.mask for w in sets]),
        np.concatenate([w.stats for w in sets]), np.concatenate([w.labels for w in sets]),
        np.concatenate([w.session + int(o) for w, o in zip(sets, offsets, strict=True)]),
        np.concatenate([w.position for w in sets]), np.concatenate([w.prada for w in sets]),
        np.concatenate([w.ts for w in sets]),
    )
