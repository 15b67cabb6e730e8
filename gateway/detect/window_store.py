"""Where account windows, risk states and campaign sketches live; the in-process store.

Stdlib + numpy. :class:`WindowStore` is what the detector needs: one call per micro-batch that
appends the new requests and returns the windows (and risk states) of the accounts about to be
scored — one Redis round trip in :mod:`gateway.detect.redis_window_store`, dict operations here.
Everything is bounded: ``window`` requests per account, ``max_accounts`` accounts (least
recently seen evicted), so memory stays flat whatever the traffic.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from gateway.detect.features import RequestFeatures
from gateway.detect.risk import RiskState


@dataclass(frozen=True, slots=True)
class Sketch:
    """What campaign clustering keeps per account: template signature, network, latest score."""

    signature: npt.NDArray[np.uint32]
    strength: float
    network: int
    score: float
    ts: float
    young: bool = False
    """Sketched before the account had enough requests to be scored (its score is 0)."""
    behaviour: npt.NDArray[np.float32] | None = None
    """:func:`gateway.detect.behaviour.profile` of its window (None in old sketches)."""
    born: float = 0.0
    """When its window's oldest request was sent."""


@dataclass
class Fetched:
    windows: dict[str, list[RequestFeatures]]
    risks: dict[str, RiskState]


class WindowStore(Protocol):
    window: int
    """Requests kept per account."""

    async def exchange(self, appends: Sequence[tuple[str, RequestFeatures]],
                       fetch: Iterable[str]) -> Fetched:
        """Append ``appends`` (in order) and return the windows and risk states of ``fetch``."""
        ...

    async def save(self, risks: Mapping[str, RiskState], sketches: Mapping[str, Sketch]) -> None:
        ...

    async def sketches(self, since: float) -> dict[str, Sketch]:
        """Sketches of accounts scored at or after ``since``."""
        ...

    async def set_risk(self, account: str, state: RiskState) -> None:
        ...

    async def close(self) -> None:
        ...


class MemoryWindowStore:
    """Embedded mode: this process's own history."""

    def __init__(self, window: int, max_accounts: int = 100_000) -> None:
        self.window = window
        self.max_accounts = max_accounts
        self._windows: OrderedDict[str, deque[RequestFeatures]] = OrderedDict()
        self._risks: dict[str, RiskState] = {}
        self._sketches: dict[str, Sketch] = {}

    async def exchange(self, appends: Sequence[tuple[str, RequestFeatures]],
                       fetch: Iterable[str]) -> Fetched:
        for account, item in appends:
            queue = self._windows.get(account)
            if queue is None:
                queue = self._windows[account] = deque(maxlen=self.window)
                if len(self._windows) > self.max_accounts:
                    old, _ = self._windows.popitem(last=False)
                    self._risks.pop(old, None)
                    self._sketches.pop(old, None)
            else:
                self._windows.move_to_end(account)
            queue.append(item)
        wanted = list(fetch)
        return Fetched(
            {a: list(self._windows.get(a, ())) for a in wanted},
            {a: self._risks.get(a, RiskState()) for a in wanted},
        )

    async def save(self, risks: Mapping[str, RiskState], sketches: Mapping[str, Sketch]) -> None:
        self._risks.update(risks)
        self._sketches.update(sketches)

    async def set_risk(self, account: str, state: RiskState) -> None:
        self._risks[account] = state

    async def sketches(self, since: float) -> dict[str, Sketch]:
        return {a: s for a, s in self._sketches.items() if s.ts >= since}

    async def close(self) -> None:
        return None
