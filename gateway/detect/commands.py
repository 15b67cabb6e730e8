"""``gateway`` subcommands of this feature (registered by ``gateway.cli``)."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """Add this feature's subcommands to the CLI's subparsers."""
    return None
