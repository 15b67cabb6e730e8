"""Campaign clustering: accounts that share a prompt template (and a network or a suspicion).

Stdlib + numpy. Each account's sketch carries the per-slot most shared MinHash values of its
window (its template signature) and how consistently they recur (``strength``). Locality-
sensitive hashing over the signatures (``bands`` x ``rows``) proposes candidate pairs; a pair is
linked when at least ``min_similarity`` of the slots agree. Connected components of at least
``min_accounts`` become campaigns when their classifier scores are, on average, suspicious; a
shared network origin (a /24 for most of them) lowers the bar (:func:`required_score`) but is
not enough alone — neither a shared open-source template nor an office NAT is evidence.

Operations that share no template (every prompt paraphrased, a network per account) are found
by behaviour instead (:func:`cohorts`): accounts with the same sampling parameters, prompt and
answer sizes, cues and pacing (:mod:`gateway.detect.behaviour`) that first appeared together:
within an hour of each other, or within three of their own pauses for accounts slower than
that. A cohort is a campaign only when its requests taken together score as one
extracting account would (:func:`judge_cohort`); crowds of people on one SDK's defaults behave
alike too.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from gateway.detect import behaviour
from gateway.detect.features import MINHASH_K
from gateway.detect.window_store import Sketch

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


BIRTH_PAUSES: Final = 3.0
"""Accounts appeared together when within this many of their own median pauses of each other
(or within the birth span, whichever is longer)."""


def uncleared(sketches: Mapping[str, Sketch], min_score: float) -> dict[str, Sketch]:
    """The accounts that their own windows have not cleared: too young to be scored, or scored
    ``min_score`` or more. Behavioural cohorts are formed among these alone.

    Merging a cohort's requests into one window is how an operation split into accounts too
    small to score is seen whole. An account old enough to be scored has its own window as
    evidence, and merging people who each scored benign makes a window no one sent: many
    people's unrelated topics in one stream reads as harvesting. Measured: a model trained not
    to lean on free decoration (window-v10) listed 13 of 723 held-out benign accounts in two
    such cohorts (people and shared keys, every member scored 0.00-0.10 on its own, the merge
    0.94-0.96; bench/adaptive_suite.md, phase 15)."""
    return {a: s for a, s in sketches.items() if s.young or s.score >= min_score}


def cohorts(sketches: Mapping[str, Sketch], *, min_accounts: int = 5,
            birth_span_s: float = 3600.0, max_neighbours: int = 2000) -> list[list[str]]:
    """Groups of at least ``min_accounts`` accounts that behave alike
    (:func:`gateway.detect.behaviour.alike`) and first appeared together: within
    ``birth_span_s``, or within :data:`BIRTH_PAUSES` of their own median pause when that is
    longer. "Together" is measured in the accounts' own time: a low-and-slow operation whose
    accounts each send a request every few hours starts them over hours, not minutes, and an
    hour would see too few of them at once.

    Star-shaped, not chained: in order of appearance, the first account not yet taken seeds a
    cohort of the accounts that appeared within ``birth_span_s`` after it (its next
    ``max_neighbours`` with the same parameters at most) and are alike *to it*. Chaining
    (single linkage) would join a day's worth of people on one SDK's defaults, each alike to
    the one who signed up a little before."""
    by_key: dict[bytes, list[str]] = defaultdict(list)
    for account, sketch in sketches.items():
        if sketch.behaviour is not None and not np.isnan(sketch.behaviour).any():
            by_key[behaviour.params_key(sketch.behaviour)].append(account)
    out: list[list[str]] = []
    for members in by_key.values():
        if len(members) >= min_accounts:
            out += _stars(members, sketches, min_accounts, birth_span_s, max_neighbours)
    return sorted(out, key=lambda g: -len(g))


def _stars(members: list[str], sketches: Mapping[str, Sketch], min_accounts: int,
           birth_span_s: float, max_neighbours: int) -> list[list[str]]:
    members = sorted(members, key=lambda a: (sketches[a].born, a))
    born = np.array([sketches[a].born for a in members])
    profiles = np.stack([sketches[a].behaviour for a in members])  # type: ignore[misc]
    pause = np.expm1(np.nan_to_num(profiles[:, -1].astype(np.float64)))
    ends = np.searchsorted(born, born + np.maximum(birth_span_s, BIRTH_PAUSES * pause),
                           side="right")
    taken = np.zeros(len(members), dtype=bool)
    out: list[list[str]] = []
    for seed in range(len(members)):
        if taken[seed]:
            continue
        end = min(int(ends[seed]), seed + 1 + max_neighbours)
        near = np.flatnonzero(~taken[seed + 1:end]
                              & behaviour.alike_many(profiles[seed], profiles[seed + 1:end]))
        if len(near) + 1 >= min_accounts:
            chosen = [seed, *(seed + 1 + near).tolist()]
            taken[chosen] = True
            out.append(sorted(members[i] for i in chosen))
    return out


def judge_cohort(accounts: Sequence[str], merged: float, threshold: float,
                 birth_span_s: float) -> Campaign | None:
    """A behavioural cohort is a campaign only on what its members did together: their
    requests, taken as one account's, score at the flag threshold. Behaving alike alone is
    what every user of one SDK with its defaults does."""
    if merged < threshold:
        return None
    return Campaign(list(accounts), merged, [
        f"{len(accounts)} accounts that first appeared together (within "
        f"{birth_span_s / 60:.0f} minutes, or {BIRTH_PAUSES:.0f} of their own pauses) behave "
        "alike (same sampling parameters, prompt and answer sizes, cues and pacing)",
        f"their requests taken together as one account score {merged:.2f} on the classifier",
    ])


STRAGGLER_PEERS: Final = 64
"""Members of a cohort a straggler is compared with, at most (bounded cost per sweep)."""


def stragglers(cohort: Sequence[str], sketches: Mapping[str, Sketch], taken: Collection[str],
               birth_span_s: float) -> list[str]:
    """Accounts a cohort's star left out though they behave like it: not ``taken``, the same
    sampling parameters, alike to at least one member (one hop from the cohort, never chained
    on from each other; the first :data:`STRAGGLER_PEERS` members by birth), and first seen
    within ``birth_span_s`` of the cohort's own births.

    A star is alike to its seed, and a script's accounts drawn from real prompts vary around
    it: of a distillation split into 23 accounts of 7 requests, 1-6 fell outside the star in
    every operation (bench/adaptive_suite.md, phase 10). They are judged on their own requests
    taken together (:func:`judge_cohort`), never on the cohort's: a person alike to one member
    of an operation is not listed with it for that."""
    members = sorted(((m.born, m.behaviour) for a in cohort
                      if (m := sketches.get(a)) is not None and m.behaviour is not None),
                     key=lambda m: m[0])
    if not members:
        return []
    first, last = members[0][0] - birth_span_s, members[-1][0] + birth_span_s
    inside = set(cohort)
    found = [(a, sk.behaviour) for a, sk in sketches.items()
             if first <= sk.born <= last and a not in inside and a not in taken
             and sk.behaviour is not None]
    if not found:
        return []
    profiles = np.stack([p for _, p in found])
    n_params = len(behaviour.PARAMS)
    near = ~np.isnan(profiles).any(axis=1) & (behaviour.param_keys(profiles[:, :n_params])
                                              == behaviour.param_keys(members[0][1][:n_params])
                                              ).all(axis=1)
    alike = np.zeros(len(found), dtype=bool)
    for _, member in members[:STRAGGLER_PEERS]:
        alike |= behaviour.alike_many(member, profiles)
    return sorted(a for (a, _), ok in zip(found, near & alike, strict=True) if ok)


def joined(found: Campaign, extra: Sequence[str], merged: float) -> Campaign:
    """``found`` with the stragglers that, taken together, score as extraction."""
    return Campaign([*found.accounts, *extra], max(found.score, merged), [
        *found.reasons,
        f"{len(extra)} more accounts that appeared with them behave like its members, and their "
        f"requests taken together score {merged:.2f} on the classifier",
    ])


def find_campaigns(sketches: Mapping[str, Sketch], *, min_accounts: int = 3,
                   min_similarity: float = 0.5, min_strength: float = 0.3,
                   min_mean_score: float = 0.3, max_bucket: int = 5000) -> list[Campaign]:
    """Clusters of accounts that look like one operation on their own scores, sorted by size
    (largest first). The engine also judges young clusters on merged windows."""
    found = [judge(c, min_mean_score) for c in clusters(
        sketches, min_accounts=min_accounts, min_similarity=min_similarity,
        min_strength=min_strength, max_bucket=max_bucket)]
    return sorted((c for c in found if c is not None), key=lambda c: -len(c.accounts))
