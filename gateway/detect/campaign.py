"""Campaign clustering: accounts that share a prompt template (and a network or a suspicion).

Stdlib + numpy. Each account's sketch carries the per-slot most shared MinHash values of its
window (its template signature) and how consistently they recur (``strength``). Locality-
sensitive hashing over the signatures (``bands`` x ``rows``) proposes candidate pairs; a pair is
linked when at least ``min_similarity`` of the slots agree. Connected components of at least
``min_accounts`` become campaigns when the members also share a network origin (a /24 for
most of them) or their classifier scores are, on average, suspicious — a shared open-source
template alone is not evidence.
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


def find_campaigns(sketches: Mapping[str, Sketch], *, min_accounts: int = 3,
                   min_similarity: float = 0.5, min_strength: float = 0.3,
                   min_mean_score: float = 0.3, max_bucket: int = 5000) -> list[Campaign]:
    """Clusters of accounts that look like one operator, sorted by size (largest first)."""
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
    found = []
    for members in groups.values():
        if len(members) < min_accounts:
            continue
        networks = Counter(templated[a].network for a in members if templated[a].network)
        shared = networks.most_common(1)[0][1] if networks else 0
        mean_score = float(np.mean([templated[a].score for a in members]))
        same_network = shared * 2 >= len(members)
        if not (same_network or mean_score >= min_mean_score):
            continue
        reasons = [f"{len(members)} accounts send prompts built from one shared template"]
        if same_network:
            reasons.append(f"{shared} of them connect from the same network")
        if mean_score >= min_mean_score:
            reasons.append(f"their windows score {mean_score:.2f} on average on the classifier")
        found.append(Campaign(sorted(members), mean_score, reasons))
    return sorted(found, key=lambda c: -len(c.accounts))
