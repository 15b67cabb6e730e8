"""Admin API for watermark detection and attribution: ``POST /admin/v1/watermark/detect``.

Read-only (role ``viewer`` or above; not audited — it changes nothing). The text is scored
against every account's key and the p-value corrected for the number of keys tried.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gateway.admin.deps import AdminDeps, require_role
from gateway.admin.schemas import JSON_INTEGER, AnyText, ErrorResponse
from gateway.auth.admin_tokens import Actor
from gateway.store.flags import attributed, watermark_identities
from gateway.watermark.service import AttributionService, text_token_ids

MAX_TOKENS = 100_000
TokenId = Annotated[int, Field(ge=0, lt=2**31, strict=True), JSON_INTEGER]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403)
}


class DetectRequest(BaseModel):
    """Exactly one of ``text`` and ``token_ids`` (the other absent or null)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["text"], "properties": {"text": {"type": "string"}}},
        {"required": ["token_ids"], "properties": {"token_ids": {"type": "array"}}},
    ]})

    text: Annotated[AnyText, StringConstraints(max_length=MAX_TOKENS)] | None = None
    token_ids: list[TokenId] | None = Field(default=None, max_length=MAX_TOKENS)

    @model_validator(mode="after")
    def _one_input(self) -> DetectRequest:
        if (self.text is None) == (self.token_ids is None):
            raise ValueError("give exactly one of 'text' or 'token_ids'")
        return self


class DetectResponse(BaseModel):
    watermarked: bool
    p_value: float = Field(description="Corrected for the number of keys tested.")
    tokens_scored: int = Field(description="Distinct (context, token) pairs scored.")
    account_id: str | None = Field(description="The account whose key marks the text (for a "
                                   "cohort: its campaign flag's first account); null when not "
                                   "attributable.")
    account_ids: list[str] = Field(description="Every account the key was served to: the one "
                                   "account, or a flagged campaign's whole cohort.")
    cohort: str | None = Field(description="``cohort:<flag id>`` when the key is a flagged "
                               "campaign's, whose accounts were served under one key from the "
                               "flag on; else null.")
    score: float = Field(description="z-score of the best key's green count.")
    accounts_tested: int


def create_watermark_router(deps: AdminDeps) -> APIRouter:
    router = APIRouter(prefix="/admin/v1", tags=["watermark"], responses=_ERRORS)
    service = AttributionService(deps.settings)
    viewer = Depends(require_role(deps.tokens, "viewer"))
    detections = deps.metrics.watermark_detections

    @router.post("/watermark/detect", response_model=DetectResponse)
    async def detect(body: DetectRequest, _: Actor = viewer) -> DetectResponse:
        """Does the text carry our watermark, and whose account's key?"""
        async with deps.sessions() as session:
            ids = await watermark_identities(session)
        tokens = body.token_ids if body.token_ids is not None else text_token_ids(body.text or "")
        try:
            result = await asyncio.to_thread(service.attribute, tokens, ids)
        except Exception:
            detections.labels("error").inc()
            raise
        detections.labels(
            "attributed" if result.watermarked else "not_watermarked").inc()
        async with deps.sessions() as session:
            who = await attributed(session, result.account_id)
        return DetectResponse(
            watermarked=result.watermarked, p_value=result.p_value,
            tokens_scored=result.tokens_scored, account_id=who.account_id,
            account_ids=who.account_ids, cohort=who.cohort, score=result.score,
            accounts_tested=len(ids),
        )

    return router
