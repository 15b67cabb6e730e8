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
    from gateway.watermark.service import text_token_ids

    raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    tokens = [int(t) for t in json.loads(raw)] if args.token_ids else text_token_ids(raw)
    settings = Settings(mode=os.environ.get("GATEWAY_MODE", "local"))
    result, who, tested = asyncio.run(_attribute(settings, tokens, args.account))
    print(json.dumps({**asdict(result), **asdict(who), "accounts_tested": tested}))
    return 0 if result.watermarked else 1


async def _attribute(settings: Any, tokens: list[int], accounts: list[str] | None) -> Any:
    """Attribution among ``accounts`` (default: every account's identity and every flagged
    campaign's cohort), and who the winning identity names. The database is read only for
    what is not given (nothing, with ``--account`` and no cohort attributed)."""
    from gateway.store.db import create_engine, session_factory
    from gateway.store.flags import attributed, watermark_identities
    from gateway.watermark.service import AttributionService

    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            ids = accounts or await watermark_identities(session)
            result = AttributionService(settings).attribute(tokens, ids)
            return result, await attributed(session, result.account_id), len(ids)
    finally:
        await engine.dispose()
