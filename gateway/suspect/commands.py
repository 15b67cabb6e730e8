"""``gateway suspect``: test a suspect model for our accounts' watermark (registered by
``gateway.cli``). Exit status: 0 attributed, 1 not attributed, 2 usage or target refused,
3 the suspect did not answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add ``suspect`` to the CLI's subparsers."""
    p = commands.add_parser(
        "suspect", help="test a suspect model (OpenAI-compatible API) for our watermark and "
                        "name the accounts whose outputs trained it")
    p.add_argument("--base-url", required=True, help="the suspect's API base, e.g. https://h/v1")
    p.add_argument("--api-key-env", help="environment variable holding the suspect's API key")
    p.add_argument("--model", required=True)
    p.add_argument("--endpoint", choices=("completions", "chat"), default="completions")
    p.add_argument("--accounts", default="all",
                   help="all | flagged | campaign:FLAG_ID | a,b,c (default: all)")
    p.add_argument("--group", action="append",
                   help="NAME=a,b,c: also test these accounts as one group (repeatable)")
    p.add_argument("--alpha", type=float, default=1e-6)
    p.add_argument("--max-queries", type=int, default=1024)
    p.add_argument("--queries-per-look", type=int, default=64)
    p.add_argument("--min-counts", default="1,4",
                   help="views: score distinct pairs once seen this many times (default 1,4)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--prompts", help="a file of prompts, one per line (default: stdlib "
                                     "docstring openings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-http", action="store_true", help="allow an http:// base URL")
    p.add_argument("--allow-private-network", action="store_true",
                   help="allow a loopback or private address (the operator's explicit choice)")
    p.add_argument("--json", dest="json_out", help="write the JSON report here")
    p.add_argument("--markdown", help="write the Markdown report here")
    p.set_defaults(handler=_suspect)


def _suspect(args: argparse.Namespace) -> int:
    from gateway.suspect.client import SuspectUnavailable
    from gateway.suspect.report import report_markdown
    from gateway.suspect.selection import SelectionError
    from gateway.suspect.target import TargetRefused

    try:
        prompts = (Path(args.prompts).read_text(encoding="utf-8").splitlines()
                   if args.prompts else None)
        report = asyncio.run(_run(args, prompts))
    except (TargetRefused, SelectionError, ValueError, OSError) as exc:
        print(f"gateway suspect: {exc}", file=sys.stderr)
        return 2
    except SuspectUnavailable as exc:
        print(f"gateway suspect: the suspect did not answer: {exc}", file=sys.stderr)
        return 3
    text = json.dumps(report, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(report_markdown(report), encoding="utf-8")
    print(text)
    return 0 if report["verdict"] == "attributed" else 1


async def _run(args: argparse.Namespace, prompts: list[str] | None) -> dict[str, Any]:
    from gateway.settings import Settings
    from gateway.store.db import create_engine, session_factory
    from gateway.suspect.job import SuspectRequest, run_request
    from gateway.suspect.selection import parse_groups, select_accounts
    from gateway.suspect.target import check_url

    check_url(args.base_url, allow_http=args.allow_http)  # refuse before touching anything
    settings = Settings(mode=os.environ.get("GATEWAY_MODE", "local"))
    if args.api_key_env and args.api_key_env not in os.environ:
        raise ValueError(f"the environment variable {args.api_key_env} is not set")
    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            selection = await select_accounts(session, args.accounts)
    finally:
        await engine.dispose()
    groups = {**selection.groups, **parse_groups(args.group)}
    request = SuspectRequest(
        base_url=args.base_url, model=args.model,
        api_key=os.environ[args.api_key_env] if args.api_key_env else None,
        endpoint=args.endpoint, alpha=args.alpha, max_queries=args.max_queries,
        queries_per_look=args.queries_per_look, max_tokens=args.max_tokens,
        temperature=args.temperature, concurrency=args.concurrency, seed=args.seed,
        allow_http=args.allow_http, allow_private_network=args.allow_private_network,
        prompts=[p for p in prompts or [] if p.strip()] or None,
        min_counts=tuple(int(m) for m in args.min_counts.split(",") if m))
    meta = {"actor": f"cli:{os.environ.get('USER', 'operator')}",
            "started_at": datetime.now(UTC).isoformat()}
    return await run_request(request, settings, selection.account_ids, groups, meta)
