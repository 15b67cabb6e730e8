"""The audited changes to accounts and keys, made the same way by every caller.

The admin API, the ``gateway`` CLI and the detector's automatic enforcement all go through
:class:`AccountOperations`: a change and its audit entry are written in one transaction, and
the caches hear of the change (:class:`CacheNotifier`) only after that transaction commits,
so a change that rolls back notifies nobody and a notification never precedes its change.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.domain.limits import LIMIT_NAMES
from gateway.domain.status import STATUS_AFTER
from gateway.domain.workloads import Workload
from gateway.store import repository as repo
from gateway.store.models import Account, ApiKey, AuditEntry, EnforcementAction

log = logging.getLogger(__name__)


def _ignore(_: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class CacheNotifier:
    """What to tell this process's caches after a change commits.

    ``account_changed(account_id)`` after an account's status, tier or limits change;
    ``key_revoked(key_hash)`` after a key is revoked. They must not block; a failure is logged
    and never undoes or hides the change (other replicas' caches expire within their TTL).
    """

    account_changed: Callable[[str], None] = _ignore
    key_revoked: Callable[[str], None] = _ignore


class AuditActor(Protocol):
    """Who makes a change, as the audit log records it."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SystemActor:
    """An actor that is not an admin token: the CLI's operator, the detector."""

    name: str
    role: str


def limit_overrides(account: Account) -> dict[str, int]:
    """The account's per-account limit overrides (known limit names only)."""
    return {k: v for k, v in (account.limits or {}).items() if k in LIMIT_NAMES}


def _snapshot(account: Account) -> dict[str, Any]:
    return {"name": account.name, "tier": account.tier, "limit_overrides": limit_overrides(account)}


def _diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    changed = [f for f in before if before[f] != after[f]]
    return {"before": {f: before[f] for f in changed}, "after": {f: after[f] for f in changed}}


@dataclass(slots=True)
class AccountChanges:
    """One open transaction of audited changes (from :meth:`AccountOperations.begin`).

    ``session`` is the transaction's session, for reads and for the caller's own writes that
    must commit with the change (the detector's flags). Every method writes its audit entry
    in the same transaction, by ``actor``.
    """

    session: AsyncSession
    actor: AuditActor
    key_hash_secret: bytes | None
    changed_accounts: list[str] = field(default_factory=list)
    revoked_key_hashes: list[str] = field(default_factory=list)

    async def audit(
        self, action: str, *, target_type: str, target_id: str | None,
        reason: str | None = None, details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """An audit entry by this transaction's actor; ``details`` must hold no secrets."""
        return await repo.write_audit(
            self.session, actor=self.actor.name, role=self.actor.role, action=action,
            target_type=target_type, target_id=target_id, reason=reason, details=details,
        )

    async def create_account(
        self, *, name: str, tier: str, limits: Mapping[str, int] | None = None,
        reason: str | None = None,
    ) -> Account:
        """A new active account; ``limits`` override its tier's. The tier is the caller's to
        check against the configured tiers."""
        account = await repo.create_account(self.session, name=name, tier=tier, limits=limits)
        await self.audit(
            "account.create", target_type="account", target_id=account.id, reason=reason,
            details={"name": account.name, "tier": tier, "limit_overrides": limits},
        )
        return account

    async def update_account(
        self, account_id: str, *, name: str | None = None, tier: str | None = None,
        limit_changes: Mapping[str, int | None] | None = None, clear_limits: bool = False,
        reason: str | None = None,
    ) -> Account | None:
        """Change name, tier or limit overrides (see :func:`repo.update_account`); the audit
        holds what changed, before and after. None when the account does not exist."""
        account = await repo.get_account(self.session, account_id, for_update=True)
        if account is None:
            return None
        before = _snapshot(account)
        await repo.update_account(
            self.session, account_id, name=name, tier=tier, limit_changes=limit_changes,
            clear_limits=clear_limits,
        )
        await self.audit(
            "account.update", target_type="account", target_id=account_id, reason=reason,
            details=_diff(before, _snapshot(account)),
        )
        self.changed_accounts.append(account_id)
        return account

    async def apply_action(
        self, account: Account, *, action: str, reason: str
    ) -> EnforcementAction:
        """Warn, throttle, suspend, ban or reinstate ``account`` and record it as ToS evidence.

        Load ``account`` locked (``repo.get_account(..., for_update=True)``) in this
        transaction, so that the recorded previous status is exact under concurrent actions.
        Whether the actor may apply ``action`` is the caller's to decide.
        """
        record = await repo.record_action(
            self.session, account, action=action, reason=reason, actor=self.actor.name
        )
        await self.audit(
            f"account.{action}", target_type="account", target_id=account.id, reason=reason,
            details={"action_id": record.id, "previous_status": record.previous_status,
                     "new_status": record.new_status},
        )
        if STATUS_AFTER[action] is not None:
            self.changed_accounts.append(account.id)
        return record

    async def declare_workload(self, account_id: str, workload: Workload | None, *,
                               reason: str) -> Account | None:
        """Declare the account's workload (:mod:`gateway.domain.workloads`), or with None clear
        it; the audit holds it before and after. None when the account does not exist."""
        account = await repo.get_account(self.session, account_id, for_update=True)
        if account is None:
            return None
        before = account.workload
        account.workload = workload.to_json() if workload is not None else None
        await self.audit(
            "account.workload_declare" if workload is not None else "account.workload_clear",
            target_type="account", target_id=account_id, reason=reason,
            details={"before": before, "after": account.workload})
        return account

    async def join_cohort(self, account_ids: Sequence[str], identity: str, *,
                          reason: str) -> list[str]:
        """Serve ``account_ids`` under the watermark ``identity`` (a flagged campaign's cohort,
        :mod:`gateway.domain.cohorts`) from now on; the accounts changed. An account already
        served under another identity keeps it: its outputs so far carry that key, and a second
        campaign naming it must not split its evidence."""
        joined = list((await self.session.scalars(
            select(Account.id).where(Account.id.in_(list(dict.fromkeys(account_ids))),
                                     Account.watermark_identity.is_(None)))).all())
        return await self._serve_under(joined, identity, "watermark.cohort_join", identity,
                                       reason)

    async def leave_cohort(self, identity: str, *, reason: str) -> list[str]:
        """Serve every account of the cohort ``identity`` under its own key again (its campaign
        flag was dismissed); the accounts changed."""
        members = list((await self.session.scalars(
            select(Account.id).where(Account.watermark_identity == identity))).all())
        return await self._serve_under(members, None, "watermark.cohort_leave", identity, reason)

    async def _serve_under(self, account_ids: list[str], identity: str | None, action: str,
                           cohort: str, reason: str) -> list[str]:
        if not account_ids:
            return []
        await self.session.execute(update(Account).where(Account.id.in_(account_ids))
                                   .values(watermark_identity=identity))
        await self.audit(action, target_type="watermark", target_id=cohort, reason=reason,
                         details={"account_ids": account_ids[:100],
                                  "accounts": len(account_ids)})
        self.changed_accounts.extend(account_ids)
        return account_ids

    async def create_key(
        self, account_id: str, *, reason: str | None = None
    ) -> tuple[ApiKey, str] | None:
        """A new key and its plaintext (returned here only); None when there is no account."""
        if self.key_hash_secret is None:
            raise RuntimeError("these AccountOperations were built without a key hash secret")
        if await repo.get_account(self.session, account_id) is None:
            return None
        key, plaintext = await repo.create_key(self.session, account_id, self.key_hash_secret)
        await self.audit(
            "key.create", target_type="key", target_id=key.id, reason=reason,
            details={"account_id": account_id, "prefix": key.prefix},
        )
        return key, plaintext

    async def revoke_key(self, key_id: str, *, reason: str | None = None) -> ApiKey | None:
        """Revoke a key (idempotent); None when there is no such key."""
        key = await repo.revoke_key(self.session, key_id)
        if key is None:
            return None
        await self.audit(
            "key.revoke", target_type="key", target_id=key.id, reason=reason,
            details={"account_id": key.account_id},
        )
        self.revoked_key_hashes.append(key.key_hash)
        return key


class AccountOperations:
    """Opens transactions of audited account and key changes (see the module docstring).

    ``sessions`` stays open to callers for reads, which need neither audit nor notification;
    ``key_hash_secret`` (``Settings.key_hash_key()``) is needed only to create keys.
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], caches: CacheNotifier | None = None,
        *, key_hash_secret: bytes | None = None,
    ) -> None:
        self.sessions = sessions
        self._caches = caches or CacheNotifier()
        self._key_hash_secret = key_hash_secret

    @asynccontextmanager
    async def begin(self, actor: AuditActor) -> AsyncIterator[AccountChanges]:
        """A transaction of changes by ``actor``: committed when the block ends, rolled back if
        it raises; the caches are notified only after the commit."""
        async with self.sessions.begin() as session:
            changes = AccountChanges(session, actor, self._key_hash_secret)
            yield changes
        for account_id in changes.changed_accounts:
            self._notify(self._caches.account_changed, account_id)
        for key_hash in changes.revoked_key_hashes:
            self._notify(self._caches.key_revoked, key_hash)

    @staticmethod
    def _notify(callback: Callable[[str], None], value: str) -> None:
        try:
            callback(value)
        except Exception:
            log.exception("cache notification failed; other caches expire within their TTL")
