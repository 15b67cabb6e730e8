"""Admin REST API (``/admin/v1``): accounts, keys, traffic, enforcement and the audit log."""

from gateway.admin.deps import AdminDeps
from gateway.admin.errors import install_error_handlers
from gateway.admin.routes import create_admin_router

__all__ = ["AdminDeps", "create_admin_router", "install_error_handlers"]
