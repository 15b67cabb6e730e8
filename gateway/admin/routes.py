"""The admin REST API under ``/admin/v1`` (see DESIGN.md, "Admin REST").

Reads need the ``viewer`` role. ``reviewer`` may warn, throttle, suspend and reinstate;
``admin`` may do everything else: create accounts and keys, PATCH, revoke, ban, and change
the status of a banned account. Every mutating call writes an audit entry in the same
transaction as the change, through :class:`gateway.accounts.operations.AccountOperations`,
which tells the caches only after the commit.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.accounts.operations import AccountOperations
from gateway.admin.deps import AdminDeps, require_role
from gateway.admin.errors import insufficient_role, not_found
from gateway.admin.schemas import (
    AccountCreate,
    AccountId,
    AccountList,
    AccountOut,
    AccountPatch,
    ActionCreate,
    ActionList,
    ActionOut,
    ActionResult,
    AuditList,
    AuditOut,
    Cursor,
    ErrorResponse,
    KeyCreate,
    KeyCreated,
    KeyId,
    KeyList,
    KeyOut,
    Reason,
    RequestList,
    RequestOut,
    Text,
    TierName,
    UtcBound,
    WorkloadIn,
)
from gateway.auth.admin_tokens import Actor
from gateway.domain.roles import Role, has_role
from gateway.domain.status import AccountStatus
from gateway.domain.workloads import Workload
from gateway.errors import invalid_request
from gateway.store import repository as repo
from gateway.store.models import Account

T = TypeVar("T")

MAX_PAGE = 200
ROLES: tuple[Role, ...] = ("viewer", "reviewer", "admin")
DEFAULT_PAGE = 50
Roles = dict[Role, Any]
"""The ``Depends`` marker per role, used as a parameter default."""
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most 200.")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404)
}


async def _paged(page: Awaitable[repo.Page[T]]) -> repo.Page[T]:
    """Await a repository list call, turning a bad cursor into 400 ``param: cursor``."""
    try:
        return await page
    except repo.InvalidCursor:
        raise invalid_request(
            "The cursor is not valid for this list.", param="cursor", code="invalid_cursor"
        ) from None


async def _account(session: AsyncSession, account_id: str, *, lock: bool = False) -> Account:
    account = await repo.get_account(session, account_id, for_update=lock)
    if account is None:
        raise not_found("account", account_id[:100])
    return account


def action_role(action: str, current_status: str) -> Role:
    """The least role that may apply ``action`` to an account in ``current_status``.

    Banning, and changing the status of a banned account in any way, is for admins only;
    the other actions are for reviewers.
    """
    if action == "ban" or (current_status == "banned" and action != "warn"):
        return "admin"
    return "reviewer"


def create_admin_router(deps: AdminDeps) -> APIRouter:
    """All ``/admin/v1`` routes, bound to ``deps``."""
    router = APIRouter(prefix="/admin/v1", responses=_ERRORS)
    roles = {role: Depends(require_role(deps.tokens, role)) for role in ROLES}
    operations = deps.account_operations()
    _account_routes(router, deps, operations, roles)
    _key_routes(router, deps, operations, roles)
    _enforcement_routes(router, deps, operations, roles)
    _read_routes(router, deps, roles)
    return router


def _check_tier(deps: AdminDeps, tier: str) -> None:
    if tier not in deps.settings.tiers:
        known = ", ".join(sorted(deps.settings.tiers))
        raise invalid_request(
            f"Unknown tier; known tiers: {known}.", param="tier", code="unknown_tier"
        )


def _patch_changes(body: AccountPatch) -> dict[str, Any]:
    """The fields a PATCH sets; 400 for ``null`` name/tier or for nothing to change."""
    sent = body.model_fields_set - {"reason"}
    for field in ("name", "tier"):
        if field in sent and getattr(body, field) is None:
            raise invalid_request(f"'{field}' may not be null.", param=field)
    if not sent:
        raise invalid_request("Nothing to update: set name, tier or limits.")
    return {field: getattr(body, field) for field in sent}


def _account_routes(
    router: APIRouter, deps: AdminDeps, operations: AccountOperations, roles: Roles
) -> None:
    settings = deps.settings

    @router.post("/accounts", status_code=201, response_model=AccountOut, tags=["accounts"])
    async def create_account(body: AccountCreate, actor: Actor = roles["admin"]) -> AccountOut:
        """Create an active account (admin)."""
        tier = body.tier or settings.default_tier
        _check_tier(deps, tier)
        overrides = body.limits.values() if body.limits else None
        async with operations.begin(actor) as changes:
            account = await changes.create_account(
                name=body.name, tier=tier, limits=overrides, reason=body.reason
            )
            return AccountOut.build(account, settings)

    @router.get("/accounts", response_model=AccountList, tags=["accounts"])
    async def list_accounts(
        status: AccountStatus | None = None,
        tier: TierName | None = None,
        min_risk: Annotated[
            float | None, Query(ge=0, allow_inf_nan=False, description="At or above this risk.")
        ] = None,
        flagged: Annotated[bool | None, Query(description="Covered by an open flag.")] = None,
        limit: PageSize = DEFAULT_PAGE,
        cursor: Cursor | None = None,
        _actor: Actor = roles["viewer"],
    ) -> AccountList:
        """Accounts, newest first, filtered (viewer)."""
        async with deps.sessions() as session:
            page = await _paged(repo.list_accounts(
                session, status=status, tier=tier, min_risk=min_risk, flagged=flagged,
                limit=limit, cursor=cursor,
            ))
            items = [AccountOut.build(a, settings) for a in page.items]
        return AccountList(items=items, next_cursor=page.next_cursor)

    @router.get("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
    async def get_account(account_id: AccountId, _actor: Actor = roles["viewer"]) -> AccountOut:
        """One account with its effective limits (viewer)."""
        async with deps.sessions() as session:
            return AccountOut.build(await _account(session, account_id), settings)

    @router.patch("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
    async def patch_account(
        account_id: AccountId, body: AccountPatch, actor: Actor = roles["admin"]
    ) -> AccountOut:
        """Change name, tier or limit overrides (admin); ``null`` removes an override."""
        changes = _patch_changes(body)
        if "tier" in changes:
            _check_tier(deps, changes["tier"])
        async with operations.begin(actor) as transaction:
            account = await transaction.update_account(
                account_id, name=changes.get("name"), tier=changes.get("tier"),
                limit_changes=body.limits.changes() if body.limits else None,
                clear_limits="limits" in changes and body.limits is None, reason=body.reason,
            )
            if account is None:
                raise not_found("account", account_id[:100])
            return AccountOut.build(account, settings)

    @router.put("/accounts/{account_id}/workload", response_model=AccountOut, tags=["accounts"])
    async def declare_workload(
        account_id: AccountId, body: WorkloadIn, actor: Actor = roles["admin"]
    ) -> AccountOut:
        """Declare the account's workload (admin): the detector withholds its verdicts while the
        account stays within the allowance (``gateway.domain.workloads``)."""
        return await _declare(account_id, body.workload(), body.reason, actor)

    @router.delete("/accounts/{account_id}/workload", response_model=AccountOut,
                   tags=["accounts"])
    async def clear_workload(
        account_id: AccountId,
        reason: Annotated[Reason, Query(description="For the audit.")],
        actor: Actor = roles["admin"],
    ) -> AccountOut:
        """Clear the account's declared workload (admin); idempotent."""
        return await _declare(account_id, None, reason, actor)

    async def _declare(account_id: str, workload: Workload | None, reason: str,
                       actor: Actor) -> AccountOut:
        async with operations.begin(actor) as changes:
            account = await changes.declare_workload(account_id, workload, reason=reason)
            if account is None:
                raise not_found("account", account_id[:100])
            return AccountOut.build(account, settings)


def _key_routes(
    router: APIRouter, deps: AdminDeps, operations: AccountOperations, roles: Roles
) -> None:
    @router.post(
        "/accounts/{account_id}/keys", status_code=201, response_model=KeyCreated, tags=["keys"]
    )
    async def create_key(
        account_id: AccountId, body: KeyCreate | None = None, actor: Actor = roles["admin"]
    ) -> KeyCreated:
        """Create an API key (admin). The plaintext ``key`` is in this response only."""
        async with operations.begin(actor) as changes:
            created = await changes.create_key(account_id, reason=body.reason if body else None)
            if created is None:
                raise not_found("account", account_id[:100])
            key, plaintext = created
            return KeyCreated(
                id=key.id, account_id=account_id, key=plaintext, prefix=key.prefix,
                created_at=key.created_at,
            )

    @router.get("/accounts/{account_id}/keys", response_model=KeyList, tags=["keys"])
    async def list_keys(account_id: AccountId, _actor: Actor = roles["viewer"]) -> KeyList:
        """The account's keys, revoked ones included; never plaintext or hash (viewer)."""
        async with deps.sessions() as session:
            await _account(session, account_id)
            keys = await repo.list_keys(session, account_id)
            return KeyList(items=[KeyOut.build(k) for k in keys])

    @router.delete("/keys/{key_id}", response_model=KeyOut, tags=["keys"])
    async def revoke_key(
        key_id: KeyId,
        reason: Annotated[Reason | None, Query(description="For the audit.")] = None,
        actor: Actor = roles["admin"],
    ) -> KeyOut:
        """Revoke a key (admin); idempotent. Takes effect on every replica within the cache TTL."""
        async with operations.begin(actor) as changes:
            key = await changes.revoke_key(key_id, reason=reason)
            if key is None:
                raise not_found("key", key_id[:100])
            return KeyOut.build(key)


def _enforcement_routes(
    router: APIRouter, deps: AdminDeps, operations: AccountOperations, roles: Roles
) -> None:
    @router.post(
        "/accounts/{account_id}/actions", status_code=201, response_model=ActionResult,
        tags=["enforcement"],
    )
    async def take_action(
        account_id: AccountId, body: ActionCreate, actor: Actor = roles["reviewer"]
    ) -> ActionResult:
        """Warn, throttle, suspend, ban or reinstate an account, with a reason (reviewer; ban and
        anything that changes a banned account's status need admin)."""
        async with operations.begin(actor) as changes:
            account = await _account(changes.session, account_id, lock=True)
            required = action_role(body.action, account.status)
            if not has_role(actor.role, required):
                raise insufficient_role(required)
            record = await changes.apply_action(account, action=body.action, reason=body.reason)
            result = ActionResult(
                action=ActionOut.model_validate(record),
                account=AccountOut.build(account, deps.settings),
            )
        deps.metrics.admin_actions.labels(action=body.action).inc()
        return result

    @router.get("/accounts/{account_id}/actions", response_model=ActionList, tags=["enforcement"])
    async def list_actions(
        account_id: AccountId,
        limit: PageSize = DEFAULT_PAGE,
        cursor: Cursor | None = None,
        _actor: Actor = roles["viewer"],
    ) -> ActionList:
        """The account's enforcement history, newest first (viewer)."""
        async with deps.sessions() as session:
            await _account(session, account_id)
            page = await _paged(
                repo.list_actions(session, account_id, limit=limit, cursor=cursor)
            )
            items = [ActionOut.model_validate(a) for a in page.items]
        return ActionList(items=items, next_cursor=page.next_cursor)


def _read_routes(router: APIRouter, deps: AdminDeps, roles: Roles) -> None:
    @router.get("/accounts/{account_id}/requests", response_model=RequestList, tags=["traffic"])
    async def list_requests(
        account_id: AccountId,
        since: Annotated[UtcBound | None, Query(description="Inclusive; naive = UTC.")] = None,
        until: Annotated[UtcBound | None, Query(description="Exclusive; naive = UTC.")] = None,
        limit: PageSize = DEFAULT_PAGE,
        cursor: Cursor | None = None,
        _actor: Actor = roles["viewer"],
    ) -> RequestList:
        """The account's request records, newest first (viewer)."""
        async with deps.sessions() as session:
            await _account(session, account_id)
            page = await _paged(repo.list_requests(
                session, account_id, since=since, until=until, limit=limit, cursor=cursor
            ))
            items = [RequestOut.model_validate(r) for r in page.items]
        return RequestList(items=items, next_cursor=page.next_cursor)

    @router.get("/audit", response_model=AuditList, tags=["audit"])
    async def list_audit(
        actor: Annotated[Text | None, Query(max_length=200)] = None,
        action: Annotated[Text | None, Query(max_length=64)] = None,
        target_type: Annotated[Text | None, Query(max_length=32)] = None,
        target_id: Annotated[Text | None, Query(max_length=64)] = None,
        limit: PageSize = DEFAULT_PAGE,
        cursor: Cursor | None = None,
        _actor: Actor = roles["viewer"],
    ) -> AuditList:
        """The audit log, newest first, filtered by exact match (viewer)."""
        async with deps.sessions() as session:
            page = await _paged(repo.list_audit(
                session, actor=actor, action=action, target_type=target_type,
                target_id=target_id, limit=limit, cursor=cursor,
            ))
            items = [AuditOut.model_validate(e) for e in page.items]
        return AuditList(items=items, next_cursor=page.next_cursor)

