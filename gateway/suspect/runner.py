"""One run: sample the suspect a look at a time, score new distinct pairs under every
candidate key, and stop at the first look that attributes (see :mod:`.sequential`) or when
the query budget is spent."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gateway.suspect.candidates import Candidates
from gateway.suspect.client import Sampler, SuspectUnavailable
from gateway.suspect.evidence import Evidence
from gateway.suspect.pairs import PairSet
from gateway.suspect.sequential import Hypothesis, Look, SequentialTest
from gateway.watermark.config import WatermarkConfig


@dataclass(frozen=True)
class Plan:
    """``max_queries`` requests at most, ``queries_per_look`` between looks; the number of looks
    the correction pays for is fixed by these two before the first query. ``min_counts``: the
    views scored (see :mod:`.pairs`), each a family of hypotheses the correction counts."""

    alpha: float = 1e-6
    max_queries: int = 1024
    queries_per_look: int = 64
    min_counts: tuple[int, ...] = (1, 4)

    def __post_init__(self) -> None:
        if self.max_queries < 1 or self.queries_per_look < 1:
            raise ValueError("max_queries and queries_per_look must be >= 1")
        if not self.min_counts or min(self.min_counts) < 1 or len(set(self.min_counts)) != len(
                self.min_counts):
            raise ValueError("min_counts must be distinct and >= 1")

    @property
    def max_looks(self) -> int:
        return math.ceil(self.max_queries / self.queries_per_look)


@dataclass
class SuspectResult:
    """``verdict``: "attributed" (some account or group below ``alpha`` after correction) or
    "not_attributed" (budget spent; see ``detectable_excess``)."""

    verdict: str
    attributed: tuple[Hypothesis, ...]
    best: tuple[Hypothesis, ...]
    looks: list[Look]
    queries: int
    failed_queries: int
    pairs: int
    tokens: int
    accounts_tested: int
    groups_tested: int
    hypotheses: int
    max_looks: int
    alpha: float
    gamma: float
    width: int
    detectable_excess: float | None
    seconds: float
    min_counts: tuple[int, ...] = (1,)
    extra: dict[str, object] = field(default_factory=dict)


async def run_suspect(sampler: Sampler, prompts: Iterator[str], candidates: Candidates,
                      config: WatermarkConfig, plan: Plan,
                      on_look: Callable[[Look], None] | None = None) -> SuspectResult:
    """Run the sequential test against ``sampler``; raises :class:`SuspectUnavailable` when a
    whole look gets no reply."""
    began = time.monotonic()
    pairs = PairSet(config.width, plan.min_counts)
    views = [(m, Evidence(candidates, config.gamma)) for m in plan.min_counts]
    test = SequentialTest(plan.alpha, plan.max_looks, candidates.hypotheses * len(views))
    looks: list[Look] = []
    queries = failed = tokens = 0
    while queries < plan.max_queries:
        batch = [next(prompts) for _ in range(min(plan.queries_per_look,
                                                  plan.max_queries - queries))]
        replies = await sampler(batch)
        queries += len(batch)
        failed += len(batch) - len(replies)
        if not replies:
            raise SuspectUnavailable(f"no reply to any of {len(batch)} queries")
        for reply in replies:
            tokens += len(reply.reply_ids)
            for (_, evidence), new in zip(views, pairs.add_views(reply.prompt_ids,
                                                                 reply.reply_ids), strict=True):
                evidence.add(*new)
        look = test.look(views, queries)
        looks.append(look)
        if on_look is not None:
            on_look(look)
        if look.attributed:
            break
    last = looks[-1]
    return SuspectResult(
        verdict="attributed" if last.attributed else "not_attributed",
        attributed=last.attributed, best=last.best, looks=looks, queries=queries,
        failed_queries=failed, pairs=views[0][1].n, tokens=tokens,
        accounts_tested=len(set(candidates.account_ids)), groups_tested=len(candidates.groups),
        hypotheses=test.hypotheses, max_looks=plan.max_looks, alpha=plan.alpha,
        gamma=config.gamma, width=config.width,
        detectable_excess=(None if last.attributed
                           else test.detectable_excess(views[0][1].n, config.gamma)),
        min_counts=plan.min_counts,
        seconds=time.monotonic() - began)
