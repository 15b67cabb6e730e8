"""Admin API for testing a suspect model: ``POST /admin/v1/suspects`` starts a run in the
background (202), ``GET /admin/v1/suspects/{id}`` reads its status and report.

Starting a run needs the ``admin`` role: it makes the gateway send requests to a URL of the
admin's choosing. The URL must be https unless ``allow_http``, and must resolve to public
addresses unless ``allow_private_network`` — both explicit admin powers, recorded in the audit
entry (see :mod:`gateway.suspect.target`). The suspect's ``api_key`` is used for the run only:
never stored, logged, audited or returned. Audit: ``suspect.run`` (who, target, accounts,
budget, reason) when the run starts and ``suspect.report`` (the report) when it ends, both by
the admin who started it; the latter is how any replica answers the GET for a run it did not
start. Reading needs ``viewer``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field, SecretStr, StringConstraints
from sqlalchemy import select

from gateway.admin.deps import AdminDeps, require_role
from gateway.admin.errors import not_found
from gateway.admin.schemas import ID_MAX_CHARS, ID_PATTERN, ErrorResponse, Reason, Text
from gateway.auth.admin_tokens import Actor
from gateway.errors import GatewayError, invalid_request
from gateway.store.models import AuditEntry
from gateway.suspect.job import SuspectRequest, run_request
from gateway.suspect.jobs import Job, SuspectJobs, TooManyJobs
from gateway.suspect.selection import SelectionError, select_accounts
from gateway.suspect.target import Target, TargetRefused, check_target

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429)
}
Short = Annotated[Text, StringConstraints(min_length=1, max_length=200)]
AccountRef = Annotated[Text, StringConstraints(min_length=1, max_length=64)]


class SuspectCreate(BaseModel):
    base_url: Annotated[Text, StringConstraints(min_length=8, max_length=2000)] = Field(
        description="The suspect's OpenAI-compatible API base, e.g. https://host/v1.")
    model: Short
    api_key: SecretStr | None = Field(default=None, description="The suspect's key (used for "
                                      "this run only; never stored or returned).")
    endpoint: Literal["completions", "chat"] = "completions"
    accounts: Annotated[Text, StringConstraints(min_length=1, max_length=20_000)] = Field(
        default="all", description="all | flagged | campaign:FLAG_ID | a,b,c")
    groups: dict[Short, list[AccountRef]] = Field(default_factory=dict, max_length=100)
    alpha: float = Field(default=1e-6, gt=0, lt=1)
    max_queries: int = Field(default=1024, ge=1, le=20_000)
    queries_per_look: int = Field(default=64, ge=1, le=1024)
    max_tokens: int = Field(default=256, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0, le=2)
    concurrency: int = Field(default=4, ge=1, le=16)
    min_counts: list[Annotated[int, Field(ge=1, le=64)]] = Field(
        default=[1, 4], min_length=1, max_length=4,
        description="Views: distinct pairs scored once seen this many times (distinct values).")
    allow_http: bool = False
    allow_private_network: bool = False
    reason: Reason | None = Field(default=None, description="Written to the audit log.")


class SuspectJobOut(BaseModel):
    id: str
    status: Literal["running", "done", "failed", "unknown"] = Field(
        description="unknown: started (per the audit log) but not by this replica, and no "
                    "report recorded yet: still running elsewhere, or interrupted.")
    error: str | None = None
    report: dict[str, Any] | None = None


def _out(job: Job) -> SuspectJobOut:
    return SuspectJobOut(id=job.id, status=job.status, error=job.error, report=job.report)


def create_suspects_router(deps: AdminDeps, jobs: SuspectJobs | None = None) -> APIRouter:
    router = APIRouter(prefix="/admin/v1", tags=["suspects"], responses=_ERRORS)
    registry = jobs or SuspectJobs()
    admin = Depends(require_role(deps.tokens, "admin"))
    viewer = Depends(require_role(deps.tokens, "viewer"))
    operations = deps.account_operations()

    @router.post("/suspects", response_model=SuspectJobOut, status_code=202)
    async def start(body: SuspectCreate, actor: Actor = admin) -> SuspectJobOut:
        """Test a suspect model for our accounts' watermark (runs in the background)."""
        request = SuspectRequest(
            base_url=body.base_url, model=body.model,
            api_key=body.api_key.get_secret_value() if body.api_key else None,
            endpoint=body.endpoint, alpha=body.alpha, max_queries=body.max_queries,
            queries_per_look=body.queries_per_look, max_tokens=body.max_tokens,
            temperature=body.temperature, concurrency=body.concurrency,
            allow_http=body.allow_http, allow_private_network=body.allow_private_network,
            min_counts=tuple(body.min_counts))
        if len(set(body.min_counts)) != len(body.min_counts):
            raise invalid_request("min_counts must be distinct", param="min_counts")
        try:
            await check_target(Target(request.base_url, request.model, None, request.endpoint,
                                      request.allow_http, request.allow_private_network))
            async with deps.sessions() as session:
                selection = await select_accounts(session, body.accounts)
        except TargetRefused as exc:
            raise invalid_request(str(exc), param="base_url", code="target_refused") from None
        except SelectionError as exc:
            raise invalid_request(str(exc), param="accounts") from None
        groups = {**selection.groups, **body.groups}
        missing = {m for members in body.groups.values() for m in members} - set(
            selection.account_ids)
        if missing:
            raise invalid_request("a group names accounts that are not tested",
                                  param="groups")
        if registry.running() >= registry.max_running:
            raise GatewayError(429, "Too many suspect runs in progress; try later.",
                               code="too_many_suspect_runs")
        job_id = registry.new_id()
        async with operations.begin(actor) as changes:
            await changes.audit("suspect.run", target_type="suspect", target_id=job_id,
                                reason=body.reason, details={
                                    "base_url": body.base_url, "model": body.model,
                                    "endpoint": body.endpoint, "accounts": body.accounts[:200],
                                    "accounts_tested": len(selection.account_ids),
                                    "groups": sorted(groups)[:100], "alpha": body.alpha,
                                    "max_queries": body.max_queries,
                                    "allow_http": body.allow_http,
                                    "allow_private_network": body.allow_private_network})
        meta = {"job_id": job_id, "actor": actor.name}

        async def work() -> dict[str, Any]:
            return await run_request(request, deps.settings, selection.account_ids, groups, meta)

        async def record(job: Job) -> None:
            async with operations.begin(actor) as changes:
                await changes.audit("suspect.report", target_type="suspect", target_id=job_id,
                                    details={"status": job.status, "error": job.error,
                                             "report": job.report})

        try:
            return _out(registry.start(job_id, work, record))
        except TooManyJobs:
            raise GatewayError(429, "Too many suspect runs in progress; try later.",
                               code="too_many_suspect_runs") from None

    @router.get("/suspects/{job_id}", response_model=SuspectJobOut)
    async def read(job_id: Annotated[str, Path(pattern=ID_PATTERN, max_length=ID_MAX_CHARS)],
                   _: Actor = viewer) -> SuspectJobOut:
        """A run's status, and its report once done (from the audit log if another replica
        ran it)."""
        job = registry.get(job_id)
        if job is not None:
            return _out(job)
        async with deps.sessions() as session:
            entry = (await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "suspect.report",
                                         AuditEntry.target_id == job_id).limit(1))).first()
            started = entry is not None or (await session.scalars(
                select(AuditEntry.id).where(AuditEntry.action == "suspect.run",
                                            AuditEntry.target_id == job_id).limit(1))
            ).first() is not None
        if entry is not None and entry.details:
            d = entry.details
            return SuspectJobOut(id=job_id, status=d.get("status", "done"),
                                 error=d.get("error"), report=d.get("report"))
        if started:
            return SuspectJobOut(id=job_id, status="unknown")
        raise not_found("suspect run", job_id)

    return router
