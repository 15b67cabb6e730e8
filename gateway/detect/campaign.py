"""Campaign clustering: accounts that share a prompt template (and a network or a suspicion).

Stdlib + numpy. Each account's sketch carries the per-slot most shared MinHash values of its
window (its template signature) and how consistently they recur (``strength``). Locality-
sensitive hashing over the signatures (``bands`` x ``rows``) proposes candidate pairs; a pair is
linked when at least ``min_similarity`` of the slots agree. Connected components of at least
``min_accounts`` become campaigns when their classifier scores are, on average, suspicious; a
shared network origin (a /24 for most of them) lowers the bar (:func:`required_score`) but is
not enough alone — neither a shared open-source template nor an office NAT is evidence.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gateway.detect.features import MINHASH_K
from gateway.detect.store import Sketch

BANDS = 8
ROWS = MINHASH_K // BANDS


@dataclass(frozen=True)
class Campaign:
    accounts: list[str]
    score: float
    reasons: list[str]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


NETWORK_DISCOUNT = 3.0
"""How much a shared network origin lowers the suspicion a cluster needs."""


def required_score(min_mean_score: float, same_network: bool) -> float:
    """The mean classifier score a template cluster needs to be a campaign. A shared network
    corroborates suspicion but does not replace it: an organisation behind one NAT whose teams
    share an internal template and behave like people is not an operation."""
    return min_mean_score / NETWORK_DISCOUNT if same_network else min_mean_score


@dataclass(frozen=True)
class Cluster:
    """Accounts linked by a shared template, before judging whether they are an operation."""

    accounts: list[str]
    shared: int
    """How many of them connect from the most common network."""
    mean_score: float
    young: float
    """Share of them sketched before they could be scored."""

    @property
    def same_network(self) -> bool:
        return self.shared * 2 >= len(self.accounts)


def clusters(sketches: Mapping[str, Sketch], *, min_accounts: int = 3,
             min_similarity: float = 0.5, min_strength: float = 0.3,
             max_bucket: int = 5000) -> list[Cluster]:
    """Connected components of at least ``min_accounts`` template-sharing accounts."""
    templated = {a: s for a, s in sketches.items() if s.strength >= min_strength}
    buckets: dict[tuple[int, bytes], list[str]] = defaultdict(list)
    for account, sketch in templated.items():
        for band in range(BANDS):
            key = sketch.signature[band * ROWS:(band + 1) * ROWS].tobytes()
            buckets[(band, key)].append(account)
    uf = _UnionFind()
    for members in buckets.values():
        if len(members) < 2 or len(members) > max_bucket:
            continue
        first = members[0]
        for other in members[1:]:
            if uf.find(first) == uf.find(other):
                continue
            agree = float(np.mean(templated[first].signature == templated[other].signature))
            if agree >= min_similarity:
                uf.union(first, other)
    groups: dict[str, list[str]] = defaultdict(list)
    for account in templated:
        groups[uf.find(account)].append(account)
    out = []
    for members in groups.values():
        if len(members) < min_accounts:
            continue
        networks = Counter(templated[a].network for a in members if templated[a].network)
        out.append(Cluster(sorted(members),
                           networks.most_common(1)[0][1] if networks else 0,
                           float(np.mean([templated[a].score for a in members])),
                           float(np.mean([templated[a].young for a in members]))))
    return out


def needs_merged_score(cluster: Cluster, min_mean_score: float) -> bool:
    """A cluster whose members are mostly too young to have scores of their own is judged on
    their requests taken together (the operation as one account), not on missing evidence."""
    return cluster.young >= 0.5 and \
        cluster.mean_score < required_score(min_mean_score, cluster.same_network)


def judge(cluster: Cluster, min_mean_score: float, merged: float | None = None,
          merged_threshold: float = 1.0) -> Campaign | None:
    """The campaign ``cluster`` is, or None. ``merged``: the classifier score of the members'
    requests merged into one window, a campaign at ``merged_threshold`` or above."""
    n = len(cluster.accounts)
    suspicious = cluster.mean_score >= required_score(min_mean_score, cluster.same_network)
    together = merged is not None and merged >= merged_threshold
    if not (suspicious or together):
        return None
    reasons = [f"{n} accounts send prompts built from one shared template"]
    if cluster.same_network:
        reasons.append(f"{cluster.shared} of them connect from the same network")
    if suspicious:
        reasons.append(f"their windows score {cluster.mean_score:.2f} on average on the "
                       "classifier")
    if together:
        reasons.append(f"their requests taken together as one account score {merged:.2f} on "
                       "the classifier")
    score = max(cluster.mean_score, merged or 0.0)
    return Campaign(cluster.accounts, score, reasons)


def find_campaigns(sketches: Mapping[str, Sketch], *, min_accounts: int = 3,
                   min_similarity: float = 0.5, min_strength: float = 0.3,
                   min_mean_score: float = 0.3, max_bucket: int = 5000) -> list[Campaign]:
    """Clusters of accounts that look like one operation on their own scores, sorted by size
    (largest first). The engine also judges young clusters on merged windows."""
    found = [judge(c, min_mean_score) for c in clusters(
        sketches, min_accounts=min_accounts, min_similarity=min_similarity,
        min_strength=min_strength, max_bucket=max_bucket)]
    return sorted((c for c in found if c is not None), key=lambda c: -len(c.accounts))
