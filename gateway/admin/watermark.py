"""Admin API for watermark detection and attribution."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.admin.deps import AdminDeps


def create_watermark_router(deps: AdminDeps) -> APIRouter:
    return APIRouter(prefix="/admin/v1", tags=["watermark"])
