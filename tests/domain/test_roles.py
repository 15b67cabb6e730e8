"""Admin roles are ordered viewer < reviewer < admin."""

from __future__ import annotations

from gateway.domain.roles import has_role


def test_roles_are_ordered_viewer_reviewer_admin() -> None:
    assert has_role("admin", "admin") and has_role("admin", "reviewer")
    assert has_role("admin", "viewer")
    assert has_role("reviewer", "reviewer") and has_role("reviewer", "viewer")
    assert not has_role("reviewer", "admin")
    assert has_role("viewer", "viewer")
    assert not has_role("viewer", "reviewer") and not has_role("viewer", "admin")
