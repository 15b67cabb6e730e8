"""Who is tested: the candidate accounts' keys, and groups of accounts (sybil campaigns).

Keys are derived from the gateway's watermark secrets exactly as the model server derives them
(:func:`gateway.watermark.keys.derive_key`), current secret and previous ones alike; the keys
stay in memory and never reach a report, a log or the suspect. A group is tested as one
hypothesis whose evidence sums its members' green counts (see :mod:`gateway.suspect.evidence`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.suspect.pairs import Ints
from gateway.watermark.keys import derive_key


@dataclass(frozen=True)
class Candidates:
    """``keys[i]`` belongs to ``account_ids[i]`` (an account appears once per secret);
    ``groups`` maps a group's name to the indices of its members' keys."""

    account_ids: tuple[str, ...]
    keys: Ints
    groups: Mapping[str, Ints]

    @property
    def hypotheses(self) -> int:
        """What the correction over keys counts: every key and every group."""
        return len(self.account_ids) + len(self.groups)


def build_candidates(account_ids: Sequence[str], secrets: Sequence[bytes],
                     groups: Mapping[str, Sequence[str]] | None = None) -> Candidates:
    """Keys of ``account_ids`` under every secret, and the groups' key indices (a group member
    that is not a candidate account is an error: its evidence would be missing)."""
    if not secrets:
        raise ValueError("at least one watermark secret is needed")
    ids = tuple(a for _ in secrets for a in account_ids)
    keys = np.array([derive_key(s, a) for s in secrets for a in account_ids],
                    dtype=np.int64).reshape(-1, 2)
    where: dict[str, list[int]] = {}
    for i, account in enumerate(ids):
        where.setdefault(account, []).append(i)
    indexed: dict[str, Ints] = {}
    for name, members in (groups or {}).items():
        missing = [m for m in members if m not in where]
        if missing:
            raise ValueError(f"group {name!r} names {len(missing)} account(s) not tested")
        if len(set(members)) < 2:
            raise ValueError(f"group {name!r} needs at least two distinct accounts")
        indexed[name] = np.array(sorted({i for m in set(members) for i in where[m]}), np.int64)
    return Candidates(ids, keys, indexed)
