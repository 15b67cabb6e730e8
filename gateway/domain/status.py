"""Account statuses and the enforcement actions that move an account between them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, get_args

AccountStatus = Literal["active", "throttled", "suspended", "banned"]
ActionName = Literal["warn", "throttle", "suspend", "ban", "reinstate"]
ACCOUNT_STATUSES: Final = get_args(AccountStatus)
ACTIONS: Final = get_args(ActionName)
#: The status an action moves an account to; ``None`` keeps the current status.
STATUS_AFTER: Final[Mapping[str, str | None]] = {
    "warn": None,
    "throttle": "throttled",
    "suspend": "suspended",
    "ban": "banned",
    "reinstate": "active",
}
