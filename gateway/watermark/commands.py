"""``gateway`` subcommands of this feature (registered by ``gateway.cli``): ``detect FILE``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add this feature's subcommands to the CLI's subparsers."""
    detect = commands.add_parser(
        "detect", help="check a text file for the watermark and attribute it to an account")
    detect.add_argument("file", help="a text file, or '-' for stdin")
    detect.add_argument("--token-ids", action="store_true",
                        help="the file holds a JSON array of token ids instead of text")
    detect.add_argument("--account", action="append",
                        help="test only these account ids (default: every account in the DB)")
    detect.set_defaults(handler=_detect)


def _detect(args: argparse.Namespace) -> int:
    from gateway.settings import Settings
    from gateway.watermark.service import AttributionService, text_token_ids

    raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    tokens = [int(t) for t in json.loads(raw)] if args.token_ids else text_token_ids(raw)
    settings = Settings(mode=os.environ.get("GATEWAY_MODE", "local"))
    accounts = args.account or asyncio.run(_identities(settings))
    result = AttributionService(settings).attribute(tokens, accounts)
    who = asyncio.run(_attributed(settings, result.account_id))
    print(json.dumps({**asdict(result), **asdict(who), "accounts_tested": len(accounts)}))
    return 0 if result.watermarked else 1


async def _identities(settings: Any) -> list[str]:
    """Every account's identity and every flagged campaign's cohort."""
    from gateway.store.db import create_engine, session_factory
    from gateway.store.flags import watermark_identities

    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            return await watermark_identities(session)
    finally:
        await engine.dispose()


async def _attributed(settings: Any, identity: str | None) -> Any:
    from gateway.store.db import create_engine, session_factory
    from gateway.store.flags import attributed, attributed_directly

    direct = attributed_directly(identity)
    if direct is not None:
        return direct
    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            return await attributed(session, identity)
    finally:
        await engine.dispose()
