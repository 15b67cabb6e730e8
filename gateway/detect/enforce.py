"""The detector's policy, against the database: flags, automatic enforcement, risk scores.

Thresholds on the account's risk (see :mod:`gateway.detect.risk`): at ``flag_threshold`` an
open flag is raised (one per account at a time; later windows only raise its score), carrying
the score, the model version, the top contributing signals in plain words and sample request
ids; at ``throttle_threshold`` / ``suspend_threshold`` (both off unless configured) the account's
status changes, with an enforcement action and an audit entry by actor ``detector`` (through
:class:`gateway.accounts.operations.AccountOperations`), and ``on_account_changed`` runs after
the commit so the key cache drops the account.

A dismissed flag is not raised again for the same evidence: while the account's window still
shares at least half of its requests with the dismissed flag's window, the detector halves the
risk instead. Campaign flags are deduplicated by membership overlap, and a campaign's accounts
are watermarked under one cohort identity from its flag on (:mod:`gateway.domain.cohorts`).

An account with a declared workload (:mod:`gateway.domain.workloads`) that has sent no more
distinct requests than its allowance gets no verdict — no flag, no raised score on an open one,
no enforcement — only its risk mirrored, counted in ``gateway_detect_flags_withheld_total``; the
first escalation past the allowance flags it, saying so. Having read the declaration, the
policy does not go back to the database for that account's later scorings for
:data:`WITHHOLD_RECHECK_S` (or until it passes the allowance): a declaration cleared by an
admin takes effect within that time.

Database work runs in tasks of its own, never inside the scoring loop; risk changes go through
the ledger (:mod:`gateway.detect.ledger`), which mirrors them into ``accounts.risk_score``.
A flag that cannot be written (the database is down) is retried every :data:`RETRY_S` until it
is, or until the process stops: both writes are idempotent (an open flag only has its score
raised; a campaign matching an open one only adds members), and an account that stops sending
right after it crossed the threshold — the attacker's best moment to stop — is never scored
again, so waiting for its next scoring would lose the flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.accounts.operations import (
    AccountChanges,
    AccountOperations,
    CacheNotifier,
    SystemActor,
)
from gateway.detect import coverage
from gateway.detect.campaign import Campaign
from gateway.detect.ledger import RiskLedger
from gateway.detect.risk import DISMISS_FACTOR
from gateway.detect.runtime import Scored
from gateway.domain.cohorts import cohort_identity
from gateway.domain.workloads import Workload, withholds
from gateway.metrics import Metrics
from gateway.store import flags as flag_store
from gateway.store import repository as repo

log = logging.getLogger(__name__)
ACTOR = "detector"
ROLE = "system"
DETECTOR = SystemActor(ACTOR, ROLE)
SAMPLE_IDS = 10
OVERLAP = 0.5
RETRY_S = 5.0
WITHHOLD_RECHECK_S = 60.0
MAX_WITHHELD = 100_000
"""Accounts remembered as withheld at most (forgetting one only costs a database read)."""


class Evidence(Protocol):
    """What a flag carries besides the risk: reasons in plain words and sample requests."""

    async def explain(self, arrays: Any) -> list[str]:
        ...

    async def windows(self, accounts: Sequence[str]) -> dict[str, list[Any]]:
        ...


@dataclass(frozen=True)
class Thresholds:
    flag: float
    throttle: float | None = None
    suspend: float | None = None


def _overlap(a: Sequence[str], b: Sequence[str]) -> float:
    if not a or not b:
        return 0.0
    return len(set(a) & set(b)) / min(len(set(a)), len(set(b)))


class DbPolicy:
    """The engine's policy sink: flags, enforcement and the risk mirror (through ``ledger``,
    the risk's one owner). Everything it needs is passed in, built before it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], thresholds: Thresholds,
                 model_version: str, ledger: RiskLedger, evidence: Evidence,
                 on_account_changed: Callable[[str], None], *, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sessions = sessions
        self.clock = clock
        self.metrics = metrics
        self.thresholds = thresholds
        self.model_version = model_version
        self.ledger = ledger
        self.evidence = evidence
        self.operations = AccountOperations(
            sessions, CacheNotifier(account_changed=on_account_changed))
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed: dict[tuple[str, str], Callable[[], Awaitable[None]]] = {}
        self._retrier: asyncio.Task[None] | None = None
        self._withheld: dict[str, tuple[float, int]] = {}
        """Account -> (when to read its declaration again, its allowance)."""
        self._withheld_count = metrics.detect_withheld.labels("declared_workload")

    async def start(self) -> None:
        await self.ledger.start()
        self._retrier = asyncio.create_task(self._retry_forever())

    async def stop(self) -> None:
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failed:
            log.error("%d detector flag write(s) still failing at shutdown", len(self._failed))
        await self.ledger.stop()

    @property
    def failing(self) -> int:
        """Flag writes waiting for a retry."""
        return len(self._failed)

    def _spawn(self, make: Callable[[], Awaitable[None]], stage: str, key: str) -> None:
        """Run ``make()`` in a task of its own; on failure keep it for :meth:`retry_failed`."""
        async def guarded() -> None:
            try:
                await make()
            except Exception as exc:
                first = (stage, key) not in self._failed
                log.warning("detector policy task failed (%s): %s; retrying in %.0f s", stage,
                            type(exc).__name__, RETRY_S, exc_info=first)
                self.metrics.detect_errors.labels(stage).inc()
                self._failed[(stage, key)] = make
            else:
                self._failed.pop((stage, key), None)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            self.retry_failed()

    def retry_failed(self) -> None:
        """Start again every flag write that failed."""
        for (stage, key), make in list(self._failed.items()):
            self._spawn(make, stage, key)

    async def idle(self) -> None:
        """Wait for the policy's database tasks (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- per-account policy --------------------------------------------------------------------

    async def on_scored(self, results: Sequence[Scored]) -> None:
        t = self.thresholds
        self.ledger.scored({r.account: r.state.risk for r in results})
        for r in results:
            if r.state.risk >= t.flag and r.account not in self._busy \
                    and not self._still_withheld(r):
                self._spawn(partial(self._escalate, r), "flag", r.account)

    def _still_withheld(self, r: Scored) -> bool:
        """Whether the account's declaration, read lately, still withholds this scoring."""
        memo = self._withheld.get(r.account)
        if memo is None:
            return False
        recheck_at, allowance = memo
        if self.clock() >= recheck_at or coverage.count(r.state.coverage) > allowance:
            del self._withheld[r.account]
            return False
        self._withheld_count.inc()
        return True

    def _withhold(self, account: str, workload: Workload) -> None:
        if len(self._withheld) >= MAX_WITHHELD:
            self._withheld.clear()
        self._withheld[account] = (self.clock() + WITHHOLD_RECHECK_S, workload.allowance)
        self._withheld_count.inc()

    async def _escalate(self, r: Scored) -> None:
        """One escalation per account at a time: a later one (a new scoring, or a retry) while
        one runs has nothing to add to it."""
        if r.account in self._busy:
            return
        self._busy.add(r.account)
        try:
            await self._escalate_locked(r)
        finally:
            self._busy.discard(r.account)

    async def _escalate_locked(self, r: Scored) -> None:
        async with self.operations.begin(DETECTOR) as changes:
            session = changes.session
            account = await repo.get_account(session, r.account, for_update=True)
            if account is None:
                return
            workload = Workload.from_json(account.workload)
            distinct = coverage.count(r.state.coverage)
            if workload is not None and withholds(workload, distinct):
                account.risk_score = round(r.state.risk, 4)
                self._withhold(r.account, workload)
                return
            window_ids = r.request_ids
            open_flag = await flag_store.latest_flag(session, r.account, status="open")
            if open_flag is not None:
                if r.state.risk > open_flag.score:
                    open_flag.score = round(r.state.risk, 4)
            else:
                dismissed = await flag_store.latest_flag(session, r.account, status="dismissed")
                if dismissed is not None and _overlap(
                        window_ids, dismissed.evidence.get("window_request_ids", [])) >= OVERLAP:
                    lowered = replace(r.state, risk=r.state.risk * DISMISS_FACTOR)
                    await self.ledger.lower(r.account, lowered)
                    return
                reasons = await self.evidence.explain(r.window)
                if workload is not None:
                    reasons.append(f"past its declared {workload.kind} workload: {distinct} "
                                   f"distinct requests, allowance {workload.allowance}")
                flag = await flag_store.create_flag(
                    session, kind="account", account_ids=[r.account],
                    score=round(r.state.risk, 4), model_version=self.model_version,
                    reasons=reasons, evidence={
                        "request_ids": window_ids[-SAMPLE_IDS:],
                        "window_request_ids": window_ids,
                        "window_requests": len(window_ids),
                        "classifier_score": round(r.score, 4),
                    })
                await changes.audit(
                    "flag.create", target_type="flag", target_id=flag.id,
                    reason="; ".join(reasons)[:2000],
                    details={"account_id": r.account, "score": flag.score})
                self.metrics.detect_flags.labels("account").inc()
            account.risk_score = round(r.state.risk, 4)
            await self._enforce(changes, account, r.state.risk)

    async def _enforce(self, changes: AccountChanges, account: Any, risk_value: float) -> None:
        t = self.thresholds
        action = None
        if t.suspend is not None and risk_value >= t.suspend and account.status in (
                "active", "throttled"):
            action = "suspend"
        elif t.throttle is not None and risk_value >= t.throttle and account.status == "active":
            action = "throttle"
        if action is None:
            return
        reason = f"extraction risk {risk_value:.2f} reached the {action} threshold"
        await changes.apply_action(account, action=action, reason=reason)
        self.metrics.detect_enforcements.labels(action).inc()

    # --- campaigns -----------------------------------------------------------------------------

    async def on_campaigns(self, found: Sequence[Campaign]) -> None:
        if found:
            key = ",".join(sorted(a for c in found for a in c.accounts))
            self._spawn(partial(self._campaigns, found), "campaign_flag", key)

    async def _campaigns(self, found: Sequence[Campaign]) -> None:
        for c in found:
            windows = await self.evidence.windows(c.accounts[:5])
            sample = [it.request_id for items in windows.values() for it in items[-2:]]
            async with self.operations.begin(DETECTOR) as changes:
                session = changes.session
                known = [a for a in c.accounts if await repo.get_account(session, a) is not None]
                if len(known) < 2:
                    continue
                existing = await flag_store.campaign_flags(session, ("open", "dismissed",
                                                                     "confirmed"))
                match = next((f for f in existing if _overlap(known, f.account_ids) >= OVERLAP),
                             None)
                if match is not None:
                    if match.status == "open":
                        grown = len(set(known) - set(match.account_ids))
                        await flag_store.add_accounts(session, match, known)
                        match.score = round(max(match.score, c.score), 4)
                        if grown:  # the cluster grew: describe it as it is now
                            match.reasons = list(c.reasons)
                            await changes.join_cohort(known, cohort_identity(match.id),
                                                      reason=f"campaign flag {match.id} grew")
                    continue
                flag = await flag_store.create_flag(
                    session, kind="campaign", account_ids=known, score=round(c.score, 4),
                    model_version=self.model_version, reasons=c.reasons,
                    evidence={"request_ids": sample[:SAMPLE_IDS], "accounts": len(known)})
                await repo.write_audit(
                    session, actor=ACTOR, role=ROLE, action="flag.create", target_type="flag",
                    target_id=flag.id, reason="; ".join(c.reasons)[:2000],
                    details={"account_ids": known[:100], "kind": "campaign"})
                await changes.join_cohort(known, cohort_identity(flag.id),
                                          reason=f"campaign flag {flag.id}")
                self.metrics.detect_flags.labels("campaign").inc()
