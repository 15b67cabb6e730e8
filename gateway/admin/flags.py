"""Admin API for extraction flags: list, inspect with evidence, review."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.admin.deps import AdminDeps


def create_flags_router(deps: AdminDeps) -> APIRouter:
    return APIRouter(prefix="/admin/v1", tags=["flags"])
