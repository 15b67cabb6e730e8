"""Declared workloads: what an operator knows about an account that its traffic cannot show.

An evaluation harness's first pass over a benchmark — fresh questions, one format, temperature
0, long chain-of-thought answers — is, request for request, a greedy chain-of-thought harvest.
No window of traffic tells them apart (``bench/adaptive_suite.md``: a classifier taught greedy
harvesting flagged 42% of held-out harnesses); the customer's contract does. So the operator,
never the client, may declare an account's workload, with an **allowance**: how many distinct
requests that workload needs (a benchmark's size, reruns included for free). While the account
has sent no more distinct requests than its allowance, the detector's verdicts on it are
withheld — its risk is still scored and kept — and the first scoring past the allowance flags
as any other account's would, with its full risk. A declaration therefore bounds what it can
leak: an attacker who talked its way into one harvests at most ``allowance`` distinct answers
(plus one scoring stride) before the flag, the same bound an honest harness stays under.

Distinct requests are :func:`gateway.detect.coverage.count`'s: exact below its capacity, an
upper bound above it (never in the account's favour). Campaign flags are not withheld: a
declaration speaks for one account, not for a cluster that behaves alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, cast, get_args

WorkloadKind = Literal["evaluation"]
KINDS: Final = frozenset(get_args(WorkloadKind))
MAX_ALLOWANCE: Final = 65_535
"""The largest allowance (the coverage count's ceiling)."""


@dataclass(frozen=True, slots=True)
class Workload:
    kind: WorkloadKind
    allowance: int
    """Distinct requests the workload may send before the detector's verdicts apply."""

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "allowance": self.allowance}

    @classmethod
    def from_json(cls, value: object) -> Workload | None:
        """The stored declaration; None for none or for anything malformed (fail closed: an
        unreadable declaration withholds nothing)."""
        if not isinstance(value, dict):
            return None
        kind, allowance = value.get("kind"), value.get("allowance")
        if not isinstance(kind, str) or kind not in KINDS or type(allowance) is not int \
                or not 0 < allowance <= MAX_ALLOWANCE:
            return None
        return cls(cast(WorkloadKind, kind), allowance)


def withholds(workload: Workload | None, distinct: int) -> bool:
    """Whether a declaration withholds the detector's verdict on an account that has sent
    ``distinct`` distinct requests."""
    return workload is not None and distinct <= workload.allowance
