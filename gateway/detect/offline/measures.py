"""Per-account metrics for the model and the baselines. numpy only.

Scores are per window; an account's score is its *peak risk* over the session (the quantity the
runtime flags on), replaying the runtime's policy (:mod:`gateway.detect.risk`) over its windows
in time order. From peak risks come ROC AUC and TPR at fixed FPR; from the calibrated threshold
come requests-before-flag per attack profile and false-flag rates per benign profile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gateway.detect import risk
from gateway.detect.offline.dataset import Windows
from gateway.detect.offline.simulate import Session

F = npt.NDArray[np.float64]
DEFAULT_HALF_LIFE_S = 3 * 86400.0
CALIBRATION_MARGIN = 0.5


@dataclass
class Replay:
    """Per session: peak risk, and how many requests had been seen when the flag fired."""

    peak: F
    flagged_at: list[int | None] = field(default_factory=list)


def replay(windows: Windows, scores: npt.NDArray[np.floating], n_sessions: int,
           threshold: float = 2.0, half_life_s: float = DEFAULT_HALF_LIFE_S) -> Replay:
    """Each session's risk over its scorings in order; a scoring of several windows (one per
    client) counts its highest score, as the runtime does."""
    peak = np.zeros(n_sessions)
    flagged: list[int | None] = [None] * n_sessions
    states = [risk.RiskState() for _ in range(n_sessions)]
    for s, position, ts, score in _scorings(windows, scores):
        states[s] = risk.update(states[s], score, ts, half_life_s)
        if states[s].risk > peak[s]:
            peak[s] = states[s].risk
        if flagged[s] is None and states[s].risk >= threshold:
            flagged[s] = position
    return Replay(peak, flagged)


def _scorings(windows: Windows, scores: npt.NDArray[np.floating]
              ) -> list[tuple[int, int, float, float]]:
    """(session, position, time, score) per scoring, in order: the windows of one session
    at one position merged, the latest time and the highest score kept."""
    out: list[tuple[int, int, float, float]] = []
    for k in np.lexsort((windows.position, windows.session)):
        key = (int(windows.session[k]), int(windows.position[k]))
        ts, score = float(windows.ts[k]), float(scores[k])
        if out and out[-1][:2] == key:
            out[-1] = (*key, max(out[-1][2], ts), max(out[-1][3], score))
        else:
            out.append((*key, ts, score))
    return out


def calibrate(peaks_benign: F) -> float:
    """Halfway between the highest benign peak risk in training and 1: a margin for traffic
    the model has not seen, rather than a threshold fitted to the generator."""
    top = float(np.max(peaks_benign)) if len(peaks_benign) else 0.0
    return top + CALIBRATION_MARGIN * (1.0 - top)


def roc_auc(scores: F, labels: npt.NDArray[np.integer]) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def tpr_at_fpr(scores: F, labels: npt.NDArray[np.integer], fpr: float) -> float:
    """Best TPR with at most ``fpr`` of benign accounts above the threshold."""
    neg = np.sort(scores[labels == 0])[::-1]
    pos = scores[labels == 1]
    allowed = int(np.floor(fpr * len(neg)))
    if allowed >= len(neg):
        return 1.0
    threshold = neg[allowed]
    return float((pos > threshold).mean())


@dataclass
class Report:
    name: str
    auc: float
    tpr_1: float
    tpr_01: float
    threshold: float
    attack: dict[str, tuple[int, int, float | None]]
    """profile -> (flagged, accounts, median requests before flag among flagged)."""
    benign: dict[str, tuple[int, int]]
    """profile -> (falsely flagged, accounts)."""


def report(name: str, sessions: Sequence[Session], windows: Windows,
           scores: npt.NDArray[np.floating], threshold: float,
           half_life_s: float = DEFAULT_HALF_LIFE_S) -> Report:
    result = replay(windows, scores, len(sessions), threshold, half_life_s)
    labels = np.array([s.label for s in sessions])
    attack: dict[str, list[int | None]] = defaultdict(list)
    benign: dict[str, list[bool]] = defaultdict(list)
    for s, at in zip(sessions, result.flagged_at, strict=True):
        if s.label:
            attack[s.profile].append(at)
        else:
            benign[s.profile].append(at is not None)
    return Report(
        name, roc_auc(result.peak, labels), tpr_at_fpr(result.peak, labels, 0.01),
        tpr_at_fpr(result.peak, labels, 0.001), threshold,
        {p: (sum(a is not None for a in v), len(v),
             float(np.median([a for a in v if a is not None])) if any(
                 a is not None for a in v) else None) for p, v in attack.items()},
        {p: (sum(v), len(v)) for p, v in benign.items()},
    )


def format_reports(reports: Sequence[Report]) -> str:
    """A plain-text table: metrics by row, methods by column."""
    names = [r.name for r in reports]
    width = max(14, *(len(n) + 2 for n in names))
    lines = ["".ljust(34) + "".join(n.rjust(width) for n in names)]

    def row(label: str, values: Sequence[str]) -> None:
        lines.append(label.ljust(34) + "".join(v.rjust(width) for v in values))

    row("ROC AUC (per account)", [f"{r.auc:.4f}" for r in reports])
    row("TPR @ 1% FPR", [f"{100 * r.tpr_1:.1f}%" for r in reports])
    row("TPR @ 0.1% FPR", [f"{100 * r.tpr_01:.1f}%" for r in reports])
    row("flag threshold (calibrated)", [f"{r.threshold:.3f}" for r in reports])
    lines.append("attack: flagged, median requests before flag")
    for profile in reports[0].attack:
        cells = []
        for r in reports:
            got, total, med = r.attack[profile]
            cells.append(f"{got}/{total} @{med:.0f}" if med is not None else f"{got}/{total}")
        row(f"  {profile}", cells)
    lines.append("benign: false-flag rate")
    for profile in reports[0].benign:
        cells = []
        for r in reports:
            bad, total = r.benign[profile]
            cells.append(f"{100 * bad / max(total, 1):.2f}% ({bad}/{total})")
        row(f"  {profile}", cells)
    return "\n".join(lines)
