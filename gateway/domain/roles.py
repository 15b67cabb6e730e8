"""Admin roles, ordered ``viewer`` < ``reviewer`` < ``admin``."""

from __future__ import annotations

from typing import Literal

Role = Literal["viewer", "reviewer", "admin"]
ROLE_RANK: dict[Role, int] = {"viewer": 0, "reviewer": 1, "admin": 2}


def has_role(role: Role, required: Role) -> bool:
    """True when ``role`` is at least ``required`` in the viewer < reviewer < admin order."""
    return ROLE_RANK[role] >= ROLE_RANK[required]
