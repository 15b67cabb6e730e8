"""Admin API for extraction flags: list, inspect with evidence, review.

``GET /admin/v1/flags`` and ``GET /admin/v1/flags/{id}`` need the ``viewer`` role; reviewing
(``POST /admin/v1/flags/{id}/review``) needs ``reviewer`` and is audited in the same
transaction. Dismissing a flag halves the risk score of every account it covers, and the
detector does not raise it again for the same evidence (see :mod:`gateway.detect.enforce`).
Confirming records the reviewer's judgement only; enforcement stays an explicit action
(``POST /admin/v1/accounts/{id}/actions``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import select

from gateway.admin.deps import AdminDeps, require_role
from gateway.admin.errors import not_found
from gateway.admin.schemas import (
    ID_MAX_CHARS,
    ID_PATTERN,
    Cursor,
    ErrorResponse,
    FlagId,
    Note,
    record_view,
)
from gateway.auth.admin_tokens import Actor
from gateway.detect.ledger import RiskLedger
from gateway.domain.cohorts import cohort_identity
from gateway.errors import GatewayError, invalid_request
from gateway.store import flags as store
from gateway.store import repository as repo
from gateway.store.models import RequestRow

FlagStatus = Literal["open", "confirmed", "dismissed"]
UtcDatetime = Annotated[datetime, AfterValidator(repo.as_utc)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409)
}


class FlagOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: Literal["account", "campaign"]
    account_id: str
    account_ids: list[str] = Field(description="Every account the flag covers (campaigns: "
                                               "the whole cluster).")
    status: FlagStatus
    score: float = Field(description="The account's risk when flagged (campaigns: the "
                                     "cluster's mean classifier score).")
    model_version: str
    reasons: list[str] = Field(description="Top contributing signals, in plain words.")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    reviewed_by: str | None
    reviewed_at: UtcDatetime | None
    review_note: str | None


EVIDENCE_FIELDS = (
    "request_id", "account_id", "route", "status_code", "model", "prompt_tokens",
    "completion_tokens", "max_tokens", "logprobs", "top_logprobs", "logit_bias_size",
    "prompt_chars", "prompt_hash", "created_at",
)
"""The request record's fields a flag's evidence shows (never the prompt's text)."""

if TYPE_CHECKING:
    class EvidenceRequest(BaseModel):
        """:data:`EVIDENCE_FIELDS` of a request record (built by :func:`record_view`)."""
else:
    EvidenceRequest = record_view("EvidenceRequest", EVIDENCE_FIELDS)


class FlagDetail(FlagOut):
    evidence: dict[str, Any] = Field(description="Sample request ids and window facts.")
    requests: list[EvidenceRequest] = Field(
        description="The sample requests' records, where still retained.")


class FlagList(BaseModel):
    items: list[FlagOut]
    next_cursor: str | None


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirm", "dismiss"]
    note: Note | None = None


def already_reviewed(flag_id: str, status: str) -> GatewayError:
    return GatewayError(409, f"Flag '{flag_id}' was already reviewed ({status}).",
                        type="invalid_request_error", code="flag_already_reviewed")


def create_flags_router(deps: AdminDeps) -> APIRouter:
    router = APIRouter(prefix="/admin/v1", tags=["flags"], responses=_ERRORS)
    viewer = Depends(require_role(deps.tokens, "viewer"))
    reviewer = Depends(require_role(deps.tokens, "reviewer"))
    operations = deps.account_operations()
    risk = deps.risk or RiskLedger(deps.sessions, None, metrics=deps.metrics)
    reviews = deps.metrics.detect_flag_reviews

    @router.get("/flags", response_model=FlagList)
    async def list_flags(
        status: FlagStatus | None = None,
        account_id: Annotated[
            str | None, Query(pattern=ID_PATTERN, max_length=ID_MAX_CHARS)
        ] = None,
        kind: Literal["account", "campaign"] | None = None,
        limit: Annotated[int, Query(ge=1, le=200, description="At most 200.")] = 50,
        cursor: Cursor | None = None,
        _actor: Actor = viewer,
    ) -> FlagList:
        """Flags, newest first; ``account_id`` matches campaign members too (viewer)."""
        async with deps.sessions() as session:
            try:
                page = await store.list_flags(session, status=status, account_id=account_id,
                                              kind=kind, limit=limit, cursor=cursor)
            except repo.InvalidCursor:
                raise invalid_request("The cursor is not valid for this list.", param="cursor",
                                      code="invalid_cursor") from None
            items = [FlagOut.model_validate(f) for f in page.items]
        return FlagList(items=items, next_cursor=page.next_cursor)

    @router.get("/flags/{flag_id}", response_model=FlagDetail)
    async def get_flag(flag_id: FlagId, _actor: Actor = viewer) -> FlagDetail:
        """One flag with its evidence: sample request records (viewer)."""
        async with deps.sessions() as session:
            flag = await store.get_flag(session, flag_id)
            if flag is None:
                raise not_found("flag", flag_id[:100])
            ids = list(flag.evidence.get("request_ids", []))[:50]
            rows = (await session.scalars(
                select(RequestRow).where(RequestRow.request_id.in_(ids)))).all() if ids else []
            out = FlagOut.model_validate(flag).model_dump()
            evidence = {k: v for k, v in flag.evidence.items() if k != "window_request_ids"}
            return FlagDetail(**out, evidence=evidence,
                              requests=[EvidenceRequest.model_validate(r) for r in rows])

    @router.post("/flags/{flag_id}/review", response_model=FlagOut)
    async def review_flag(flag_id: FlagId, body: Review, actor: Actor = reviewer) -> FlagOut:
        """Confirm or dismiss an open flag (reviewer). Dismissal lowers the risk score of the
        accounts it covers; the same evidence is not flagged again. Dismissing a campaign
        serves its accounts under their own watermark keys again."""
        async with operations.begin(actor) as changes:
            session = changes.session
            flag = await store.get_flag(session, flag_id, for_update=True)
            if flag is None:
                raise not_found("flag", flag_id[:100])
            if flag.status != "open":
                raise already_reviewed(flag_id, flag.status)
            await store.review_flag(session, flag, decision=body.decision, actor=actor.name,
                                    note=body.note)
            await changes.audit(
                f"flag.{body.decision}", target_type="flag", target_id=flag.id, reason=body.note,
                details={"account_ids": flag.account_ids[:100], "kind": flag.kind})
            if flag.kind == "campaign" and body.decision == "dismiss":
                await changes.leave_cohort(cohort_identity(flag.id),
                                           reason=f"campaign flag {flag.id} dismissed")
            reviewed = FlagOut.model_validate(flag)
            accounts = list(flag.account_ids)
        if body.decision == "dismiss":
            await risk.dismiss(accounts)
        reviews.labels(body.decision).inc()
        return reviewed

    return router
