"""Account risk has one owner: this ledger.

The risk itself lives in the detector's window store (Redis when replicas share it), where the
engine reads it before every scoring; ``accounts.risk_score`` in the database is the ledger's
mirror, for the admin API and reports, written in batches. Every change goes through here: the
engine's scorings (:meth:`scored`), the policy lowering the risk of evidence a reviewer already
dismissed (:meth:`lower`), and a reviewer dismissing a flag (:meth:`dismiss`, from the admin
API). Before, a dismissal halved only the database copy, and the next scoring overwrote it from
the detector's untouched one.

With detection off there is no store: a dismissal scales the mirror alone (nothing else writes
it then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.detect.risk import DISMISS_FACTOR, RiskState
from gateway.detect.window_store import WindowStore
from gateway.metrics import Metrics
from gateway.store import flags as flag_store

log = logging.getLogger(__name__)
MIRROR_STEP = 0.005
"""Mirror writes skip changes smaller than this (risk moves a little on every scoring)."""


class RiskLedger:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], store: WindowStore | None,
                 flush_interval_s: float = 2.0, *, metrics: Metrics) -> None:
        self.sessions = sessions
        self._flush_errors = metrics.detect_errors.labels("risk_flush")
        self.store = store
        self.flush_interval_s = flush_interval_s
        self._dirty: dict[str, float] = {}
        self._written: dict[str, float] = {}
        self._flusher: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="detect-risk-flush")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        with contextlib.suppress(Exception):
            await self.flush()

    # --- changes -------------------------------------------------------------------------------

    def scored(self, risks: Mapping[str, float]) -> None:
        """The engine saved these risks in the store; mirror them at the next flush."""
        self._dirty.update(risks)

    async def lower(self, account: str, state: RiskState) -> None:
        """Replace the account's risk (the policy, for evidence a reviewer dismissed)."""
        if self.store is not None:
            await self.store.set_risk(account, state)
        self._dirty[account] = state.risk

    async def dismiss(self, accounts: Sequence[str], factor: float = DISMISS_FACTOR) -> None:
        """A reviewer dismissed a flag on these accounts: their risk is multiplied by
        ``factor`` where the engine reads it, and the mirror follows at once."""
        if self.store is None:
            async with self.sessions.begin() as session:
                await flag_store.scale_risk(session, accounts, factor)
            return
        risks = (await self.store.exchange([], accounts)).risks
        lowered = {a: replace(s, risk=s.risk * factor) for a, s in risks.items()}
        await self.store.save(lowered, {})
        self._dirty.update({a: s.risk for a, s in lowered.items()})
        await self.flush(force=lowered.keys())

    # --- the mirror ----------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:
                log.exception("risk score flush failed; retrying")
                self._flush_errors.inc()

    async def flush(self, force: Iterable[str] = ()) -> None:
        """Write changed risks to the mirror (``force``: these accounts whatever the step)."""
        forced = set(force)
        dirty, self._dirty = self._dirty, {}
        changed = {a: r for a, r in dirty.items()
                   if a in forced or abs(self._written.get(a, -1.0) - r) > MIRROR_STEP}
        if not changed:
            return
        async with self.sessions.begin() as session:
            await flag_store.set_risk_scores(session, changed)
        self._written.update(changed)
        if len(self._written) > 200_000:
            self._written.clear()
