"""Helpers shared by the storage tests."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.metrics import Metrics
from gateway.records import RequestRecord, utcnow
from gateway.store.models import RequestRow


def record(tag: str = "", *, created_at: datetime | None = None, **fields: Any) -> RequestRecord:
    fields.setdefault("account_id", "acct-1")
    return RequestRecord(
        request_id=f"req-{tag}{uuid.uuid4().hex[:20]}",
        key_id="key-1",
        route="/v1/chat/completions",
        method="POST",
        status_code=200,
        created_at=created_at or utcnow(),
        **fields,
    )


async def stored_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(RequestRow.request_id))).scalars())


async def row_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(RequestRow))).scalar_one())


def metric(metrics: Metrics, name: str) -> float:
    """A sample's value in ``metrics``' registry (0 when it has none yet)."""
    return metrics.registry.get_sample_value(name) or 0.0


def spill_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("spill-*.jsonl"))


def quarantined(spill_dir: Path) -> list[dict[str, Any]]:
    """The entries of the spill directory's quarantine file, oldest first."""
    path = spill_dir / "quarantine.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]
