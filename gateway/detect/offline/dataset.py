"""Simulator sessions → features → windows: the training and evaluation data. numpy only.

Windows are taken at several points of each session (prefixes), as the runtime would see them:
first at ``min_requests`` and then every ``score_every`` requests, so the model learns to judge
short histories too (what "flagged within N requests" needs). With ``by_client`` (``gateway
train --by-client``) each prefix's window is read per client as the runtime reads it
(:func:`gateway.detect.clients.parts`): a model taught only whole windows never saw a harvesting
client read alone at its cover's pace, and window-v12 reads a PRADA harvest diluted by a
person's conversations, once split off, as benign. A part of an attack account holding none of
its harvest (the cover read alone) is then a negative. The shipped recipe does not set it yet
(bench/adaptive_suite.md, phase 18).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.detect import clients, features, window
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
    return [it for it, _ in _labelled_features(session, record)]


def _labelled_features(session: Session, record: ToRecord
                       ) -> list[tuple[features.RequestFeatures, bool]]:
    """Each recorded request's features, and whether it is part of the harvest (a request
    without that mark — the simulator's — is, in an attack account)."""
    found = features.extract_batch([record(session, i) for i in range(len(session.requests))])
    return [(f, bool(getattr(req, "harvest", True)))
            for f, req in zip(found, session.requests, strict=True) if f is not None]


def positions(n: int, min_requests: int = MIN_REQUESTS, every: int = SCORE_EVERY,
              sparse: bool = False) -> list[int]:
    """Prefix lengths at which a session of ``n`` requests is scored (sparse: for training)."""
    points = list(range(min_requests, n + 1, every))
    if sparse:
        points = [p for p in points if p <= 32 or p % 16 == 0]
    return points


def _parts(labelled: Sequence[tuple[features.RequestFeatures, bool]], p: int, size: int,
           min_requests: int, by_client: bool
           ) -> list[tuple[list[features.RequestFeatures], bool]]:
    """The windows the runtime scores after the session's first ``p`` requests, each with
    whether it holds any of the harvest."""
    recent = labelled[:p][-size:]
    items = [it for it, _ in recent]
    harvest = {id(it) for it, h in recent if h}
    split = clients.parts(items, min_requests) if by_client else [items]
    return [(list(part), any(id(it) in harvest for it in part)) for part in split]


def build_windows(sessions: Sequence[Session], *, size: int = WINDOW,
                  min_requests: int = MIN_REQUESTS, every: int = SCORE_EVERY,
                  sparse: bool = False, record: ToRecord = to_record,
                  by_client: bool = False) -> Windows:
    """A window of every session at every scoring point: whole, or (``by_client``) per client
    as the runtime scores it. A window's label is its session's, except that a client's part of
    an attack account holding none of the harvest is labelled benign. Every window of a scoring
    carries the time of the account's newest request, as the runtime's risk update does."""
    seqs, masks, stats, labels, sess, pos, prada, ts = [], [], [], [], [], [], [], []
    for i, session in enumerate(sessions):
        labelled = _labelled_features(session, record)
        points = positions(len(labelled), min_requests, every, sparse)
        parts = [(p, part, harvest) for p in points
                 for part, harvest in _parts(labelled, p, size, min_requests, by_client)]
        built = window.build_batch([part for _, part, _ in parts], size)
        for (p, _, harvest), w in zip(parts, built, strict=True):
            seqs.append(w.seq)
            masks.append(w.mask)
            stats.append(w.stats)
            labels.append(session.label if harvest or not by_client else 0)
            sess.append(i)
            pos.append(p)
            prada.append(1.0 - window.shapiro_francia(w.min_distance))
            ts.append(labelled[p - 1][0].ts)
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
