"""Admin API over the request log's quarantine: ``GET /admin/v1/request-log/quarantine``.

Records the database refused as data are set aside in the spill directory rather than stored
(see :mod:`gateway.store.quarantine`); without this list an operator would only see a counter
move. Read-only (role ``viewer`` or above; not audited — it changes nothing). Entries say which
request, whose account, why (an error class name, never the database's message, which may quote
prompt text) and when — not the record itself, which stays in the file for forensics.

The quarantine is per replica (each has its own spill directory), so the list shows the entries
of the replica that answers.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import AfterValidator, BaseModel, Field

from gateway.admin.deps import AdminDeps, require_role
from gateway.admin.schemas import ErrorResponse
from gateway.auth.admin_tokens import Actor
from gateway.store.quarantine import Quarantine, QuarantineEntry
from gateway.store.repository import as_utc

MAX_ITEMS = 200
DEFAULT_ITEMS = 50
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403)
}


class QuarantinedRecord(BaseModel):
    request_id: str | None = Field(description="Null for a spill-file line that was no record.")
    account_id: str | None
    reason: str = Field(description="Why it was refused: an error class name, e.g. "
                                    "'NotNullViolationError [23502]' or 'UnreadableLine'.")
    quarantined_at: UtcDatetime


class QuarantineList(BaseModel):
    items: list[QuarantinedRecord] = Field(description="The most recent entries, newest first.")
    next_cursor: str | None = Field(default=None, description="Always null: one page only.")


def create_quarantine_router(deps: AdminDeps) -> APIRouter:
    router = APIRouter(prefix="/admin/v1", tags=["request log"], responses=_ERRORS)
    quarantine = Quarantine(Path(deps.settings.request_log_spill_dir))
    viewer = Depends(require_role(deps.tokens, "viewer"))

    @router.get("/request-log/quarantine", response_model=QuarantineList)
    async def list_quarantine(
        limit: Annotated[int, Query(ge=1, le=MAX_ITEMS, description="At most 200.")]
        = DEFAULT_ITEMS,
        _: Actor = viewer,
    ) -> QuarantineList:
        """Request records this replica set aside instead of storing, newest first (viewer)."""
        entries = await asyncio.to_thread(quarantine.recent, limit)
        return QuarantineList(items=[_item(entry) for entry in entries])

    return router


def _item(entry: QuarantineEntry) -> QuarantinedRecord:
    return QuarantinedRecord(
        request_id=entry.request_id, account_id=entry.account_id, reason=entry.reason,
        quarantined_at=entry.quarantined_at,
    )
