"""The ``gateway`` command: serve, demo, migrate, accounts, keys, retention, echo-server.

This module must stay cheap to import, and so it does not import the application
(``gateway.app``, 1.3 s of the 2 s the module used to take) at the top. ``gateway serve
--workers N`` spawns its workers, and a spawned worker first re-imports the parent's main
module (this one, through the ``gateway`` script) before uvicorn's health-check responder
starts in it; the supervisor kills a worker that has not answered within 5 s and starts
another. On a loaded node the 2 s import grew past 5 s and each replacement worker was killed
in turn (seen in the cluster soak at load ~12: a dozen workers dead during startup after one
kill -9). Workers import the application themselves, by name (``gateway.app:create_app``), once
the responder runs. The other imports left inside functions are for optional or heavy
dependencies (uvicorn, alembic, torch, vLLM) that only some commands need.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError

from gateway.detect.offline import commands as detect_commands
from gateway.domain.status import ACTIONS
from gateway.domain.workloads import KINDS, MAX_ALLOWANCE, Workload
from gateway.modelserver import commands as modelserver_commands
from gateway.settings import Settings
from gateway.suspect import commands as suspect_commands
from gateway.watermark import commands as watermark_commands

if TYPE_CHECKING:
    from gateway.accounts.operations import AccountOperations, SystemActor

DEFAULT_PORT = 8000
DEFAULT_UPSTREAM_PORT = 8001


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        result: int = args.handler(args)
    except ValidationError as exc:
        print(f"gateway: invalid configuration:\n{_describe(exc)}", file=sys.stderr)
        return 2
    return result


def _describe(exc: ValidationError) -> str:
    return "\n".join(f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                     for e in exc.errors())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the gateway (configured by GATEWAY_* env)")
    _listen_args(serve, DEFAULT_PORT)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser("demo", help="everything embedded: gateway, upstream, SQLite")
    _listen_args(demo, DEFAULT_PORT)
    demo.add_argument("--upstream-port", type=int, default=DEFAULT_UPSTREAM_PORT)
    demo.add_argument("--api-key", help="the demo account's key (generated when absent)")
    demo.add_argument("--admin-token", help="the admin token (generated when absent)")
    demo.add_argument("--state-dir", default="./var/demo", help="SQLite file and spill dir")
    demo.add_argument("--upstream", choices=("auto", "reference", "vllm"), default="auto",
                      help="the model server: real vLLM (the vllm extra), the reference one, "
                      "or auto: vLLM where it is installed, else the reference server")
    demo.set_defaults(handler=_demo)

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the latest")
    migrate.set_defaults(handler=_migrate)

    echo = commands.add_parser("echo-server", help="a deterministic OpenAI-compatible upstream")
    _listen_args(echo, DEFAULT_UPSTREAM_PORT)
    echo.set_defaults(handler=_echo_server)

    retention = commands.add_parser(
        "retention", help="drop/delete request records past retention; partitions ahead")
    retention.add_argument("--days", type=int, help="default: GATEWAY_REQUEST_RETENTION_DAYS")
    retention.set_defaults(handler=_retention)

    _account_commands(commands)
    _key_commands(commands)
    detect_commands.register(commands)
    modelserver_commands.register(commands)
    watermark_commands.register(commands)
    suspect_commands.register(commands)
    return parser


def _listen_args(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)


def _account_commands(commands: Any) -> None:
    accounts = commands.add_parser("accounts", help="manage accounts").add_subparsers()
    create = accounts.add_parser("create", help="create an account; prints it as JSON")
    create.add_argument("--name", required=True)
    create.add_argument("--tier", help="default: GATEWAY_DEFAULT_TIER")
    create.set_defaults(handler=lambda a: _run_db(_create_account, a))
    listing = accounts.add_parser("list", help="list accounts as JSON lines")
    listing.add_argument("--status")
    listing.set_defaults(handler=lambda a: _run_db(_list_accounts, a))
    action = accounts.add_parser("action", help="warn, throttle, suspend, ban or reinstate")
    action.add_argument("account_id")
    action.add_argument("action", choices=ACTIONS)
    action.add_argument("--reason", required=True)
    action.set_defaults(handler=lambda a: _run_db(_account_action, a))
    declare = accounts.add_parser(
        "declare", help="declare an account's workload (the detector withholds its verdicts "
        "within the allowance), or clear it with --clear")
    declare.add_argument("account_id")
    declare.add_argument("--kind", choices=sorted(KINDS), default="evaluation")
    what = declare.add_mutually_exclusive_group(required=True)
    what.add_argument("--allowance", type=_allowance,
                      help="distinct requests the workload needs (reruns are free)")
    what.add_argument("--clear", action="store_true", help="clear the declaration")
    declare.add_argument("--reason", required=True)
    declare.set_defaults(handler=lambda a: _run_db(_declare_workload, a))


def _allowance(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 0 < number <= MAX_ALLOWANCE:
        raise argparse.ArgumentTypeError(f"an integer between 1 and {MAX_ALLOWANCE}")
    return number


def _key_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers()
    create = keys.add_parser("create", help="create a key; prints it (shown once) as JSON")
    create.add_argument("account_id")
    create.set_defaults(handler=lambda a: _run_db(_create_key, a))
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=lambda a: _run_db(_revoke_key, a))


# --- long-running commands --------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    Settings()  # fail fast, in the parent, on bad configuration
    # Each worker builds its app (and its Metrics) after this, so the workers share the dir.
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    import uvicorn

    uvicorn.run(
        "gateway.app:create_served_app", factory=True, host=args.host, port=args.port,
        workers=args.workers, **_uvicorn_options(),
    )
    return 0


def _uvicorn_options() -> dict[str, Any]:
    """``proxy_headers`` off: uvicorn would otherwise believe ``X-Forwarded-For`` from loopback
    peers and put a client-chosen address into the evidence; the gateway decides that itself
    (``GATEWAY_TRUST_FORWARDED_FOR``)."""
    return {
        "log_level": os.environ.get("GATEWAY_LOG_LEVEL", "info").lower(),
        "access_log": False, "server_header": False, "http": "httptools", "loop": "uvloop",
        "timeout_graceful_shutdown": 30, "proxy_headers": False,
    }


def _echo_server(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.modelserver.echo import create_echo_app

    uvicorn.run(create_echo_app(), host=args.host, port=args.port, **_uvicorn_options())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.vllm.demo import choose_upstream

    args.upstream, why = choose_upstream(args.upstream)
    print(f"Upstream: {args.upstream} ({why})", flush=True)
    state = Path(args.state_dir).resolve()
    state.mkdir(mode=0o700, parents=True, exist_ok=True)  # records, prompts and secrets live here
    admin_token = args.admin_token or "adm-" + secrets.token_urlsafe(24)
    # The watermark secret persists with the state, so earlier runs' texts stay attributable;
    # the gateway↔model-server signing secret only has to live as long as this run.
    secret_file = state / "watermark.secret"
    if not secret_file.exists():  # created 0600: never readable by others, not even briefly
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    settings = Settings(
        mode="local",
        database_url=f"sqlite+aiosqlite:///{state / 'gateway.db'}",
        upstream_url=f"http://127.0.0.1:{args.upstream_port}/v1",
        admin_token=SecretStr(admin_token),
        request_log_spill_dir=str(state / "spill"),
        watermark_secret=SecretStr(secret_file.read_text().strip()),
        upstream_signing_secret=SecretStr(secrets.token_urlsafe(32)),
        upstream_kind=args.upstream,
    )
    from gateway.store.db import make_sqlite_file_private
    from gateway.store.migrate import upgrade

    make_sqlite_file_private(settings.async_database_url)  # before migrations create it 0644
    upgrade(settings.async_database_url)
    api_key = asyncio.run(_ensure_demo_key(settings, args.api_key))
    unwind_on_sigterm()
    with _demo_vllm(args, settings, state):
        _print_demo_banner(args, api_key, admin_token)
        asyncio.run(_serve_demo(settings, args))
    return 0


def unwind_on_sigterm() -> None:
    """SIGTERM becomes ``SystemExit``, so ``with`` blocks unwind (the demo's vLLM is stopped).

    uvicorn catches SIGTERM while it serves and, once shut down, raises it again against the
    handler it found; with Python's default one the process died there, before the demo's
    context managers ran, and left vLLM running as an orphan."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


async def _ensure_demo_key(settings: Settings, requested: str | None) -> str:
    from gateway.store.bootstrap import ensure_demo_key
    from gateway.store.db import create_engine, session_factory

    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine).begin() as session:
            return await ensure_demo_key(
                session, requested, settings.key_hash_key(), tier=settings.default_tier
            )
    finally:
        await engine.dispose()


async def _serve_demo(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from gateway.app import create_app

    options = {**_uvicorn_options(), "log_level": "warning"}
    if args.upstream == "vllm":  # vLLM runs as its own process (_demo_vllm)
        await uvicorn.Server(uvicorn.Config(
            create_app(settings), host=args.host, port=args.port, **options)).serve()
        return
    model_server = _demo_upstream(settings)
    upstream = uvicorn.Server(uvicorn.Config(
        model_server, host="127.0.0.1", port=args.upstream_port, **options))
    gateway = uvicorn.Server(uvicorn.Config(
        create_app(settings), host=args.host, port=args.port, **options))
    await asyncio.gather(upstream.serve(), gateway.serve())


def _demo_vllm(args: argparse.Namespace, settings: Settings,
               state: Path) -> AbstractContextManager[None]:
    if args.upstream != "vllm":
        return nullcontext()
    from gateway.vllm.demo import demo_vllm

    assert settings.watermark_secret is not None
    return demo_vllm(args.upstream_port, settings.watermark_secret.get_secret_value(),
                     state / "vllm.log")


def _has_model_server() -> bool:
    """The reference model server needs the ``torch`` extra (torch and transformers)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def _demo_upstream(settings: Settings) -> Any:
    """The reference model server with the demo's watermark, or — without the ``torch`` extra —
    the deterministic echo upstream."""
    if not _has_model_server():
        from gateway.modelserver.echo import create_echo_app

        return create_echo_app()
    from gateway.modelserver.config import ServerConfig
    from gateway.modelserver.server import create_model_server_app
    from gateway.watermark.service import watermark_config

    assert settings.upstream_signing_secret is not None and settings.watermark_secret is not None
    return create_model_server_app(ServerConfig(
        signing_secret=settings.upstream_signing_secret.get_secret_value().encode(),
        watermark_secret=settings.watermark_secret.get_secret_value().encode(),
        watermark=watermark_config(settings),
    ))


def _print_demo_banner(args: argparse.Namespace, api_key: str, admin_token: str) -> None:
    import importlib.util
    import shlex

    base = f"http://{args.host}:{args.port}"
    watermarked = _has_model_server()
    model = "tiny-docstrings" if watermarked else "echo-1"
    upstream = ("reference model server, tiny watermarking model" if watermarked else
                "deterministic echo server, no watermark: install the torch extra for the "
                "reference model server")
    longest = 400
    if getattr(args, "upstream", "reference") == "vllm":  # vLLM: prompt + reply within 256
        upstream, longest = "vLLM, tiny watermarking model", 200
    print(f"""
Gateway demo on {base}  (upstream: {upstream}, on :{args.upstream_port})
  API key:      {api_key}
  Admin token:  {admin_token}

  curl {base}/v1/chat/completions -H "Authorization: Bearer {api_key}" \\
       -H "Content-Type: application/json" \\
       -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}'
""", flush=True)
    # The SDK example names this interpreter by its full path, so that it works as printed from
    # any shell (not only one with the venv activated), and is shown only where the ``openai``
    # package is installed (the ``demo`` extra, which the README's first command installs).
    if importlib.util.find_spec("openai") is not None:
        print(f"""  {shlex.quote(sys.executable)} -c "from openai import OpenAI; \\
c = OpenAI(base_url='{base}/v1', api_key='{api_key}'); \\
r = c.chat.completions.create(model='{model}', \\
messages=[{{'role': 'user', 'content': 'Return the'}}], max_tokens={longest}); \\
print(r.choices[0].message.content)"
""", flush=True)
    else:
        print("""  (for an example with the official openai SDK, install the demo extra:
   pip install -e ".[demo]")
""", flush=True)
    if watermarked:
        print(f"""  Whose text is it? (the watermark names the demo account)
  curl {base}/admin/v1/watermark/detect -H "Authorization: Bearer {admin_token}" \\
       -H "Content-Type: application/json" -d '{{"text": "<paste the reply here>"}}'
""", flush=True)
    print(f"""  curl {base}/admin/v1/accounts -H "Authorization: Bearer {admin_token}"
  API docs: {base}/docs    metrics: {base}/metrics
""", flush=True)


# --- one-shot database commands ---------------------------------------------------------------


def _migrate(_: argparse.Namespace) -> int:
    from gateway.store.migrate import upgrade

    upgrade(_cli_settings().async_database_url)
    print("database schema is up to date")
    return 0


def _retention(args: argparse.Namespace) -> int:
    from gateway.store import partitions
    from gateway.store.db import create_engine
    from gateway.store.retention import delete_request_records_older_than

    settings = _cli_settings()

    async def run() -> dict[str, Any]:
        """Partitions ahead first (so the daily job also covers a week without writers), then
        what is past retention."""
        engine = create_engine(settings.async_database_url)
        try:
            made = await partitions.prepare(engine)
            deleted = await delete_request_records_older_than(
                engine, args.days or settings.request_retention_days)
            return {"deleted": deleted, "partitions_created": [str(d) for d in made]}
        finally:
            await engine.dispose()

    print(json.dumps(asyncio.run(run())))
    return 0


def _cli_settings() -> Settings:
    """Database commands need only the database URL: they run with relaxed secret checks."""
    return Settings(mode=os.environ.get("GATEWAY_MODE", "local"))


Args = argparse.Namespace
DbCommand = Callable[["AccountOperations", Settings, Args], Awaitable[Any]]


def _run_db(command: DbCommand, args: Args) -> int:
    from gateway.accounts.operations import AccountOperations
    from gateway.store.db import create_engine, session_factory

    settings = _cli_settings()

    async def run() -> Any:
        engine = create_engine(settings.async_database_url)
        try:
            operations = AccountOperations(
                session_factory(engine), key_hash_secret=settings.key_hash_key())
            return await command(operations, settings, args)
        finally:
            await engine.dispose()

    result = asyncio.run(run())
    if result is None:
        return 1
    for item in result if isinstance(result, list) else [result]:
        print(json.dumps(item, default=str))
    return 0


def _no(kind: str, ident: str) -> None:
    """Say that there is no such account or key; the command then exits 1."""
    print(f"gateway: no {kind} {ident!r}", file=sys.stderr)


def _actor() -> SystemActor:
    """The CLI runs with the database's credentials: its operator acts as an admin."""
    from gateway.accounts.operations import SystemActor

    return SystemActor(f"cli:{getpass.getuser()}", "admin")


async def _create_account(operations: AccountOperations, settings: Settings, args: Args) -> Any:
    tier = args.tier or settings.default_tier
    if tier not in settings.tiers:
        print(f"gateway: unknown tier {tier!r}", file=sys.stderr)
        return None
    async with operations.begin(_actor()) as changes:
        account = await changes.create_account(name=args.name, tier=tier)
    return {"id": account.id, "name": account.name, "status": account.status,
            "tier": account.tier, "created_at": account.created_at}


async def _list_accounts(operations: AccountOperations, _: Settings, args: Args) -> Any:
    from gateway.store import repository

    async with operations.sessions() as session:
        page = await repository.list_accounts(session, status=args.status, limit=200)
    return [{"id": a.id, "name": a.name, "status": a.status, "tier": a.tier,
             "risk_score": a.risk_score} for a in page.items]


async def _account_action(operations: AccountOperations, _: Settings, args: Args) -> Any:
    from gateway.store import repository

    async with operations.begin(_actor()) as changes:
        account = await repository.get_account(changes.session, args.account_id, for_update=True)
        if account is None:
            return _no("account", args.account_id)
        action = await changes.apply_action(account, action=args.action, reason=args.reason)
    return {"account_id": account.id, "action": action.action, "status": account.status}


async def _declare_workload(operations: AccountOperations, _: Settings, args: Args) -> Any:
    workload = None if args.clear else Workload(args.kind, args.allowance)
    async with operations.begin(_actor()) as changes:
        account = await changes.declare_workload(args.account_id, workload, reason=args.reason)
    if account is None:
        return _no("account", args.account_id)
    return {"account_id": account.id, "workload": account.workload}


async def _create_key(operations: AccountOperations, _: Settings, args: Args) -> Any:
    async with operations.begin(_actor()) as changes:
        created = await changes.create_key(args.account_id)
    if created is None:
        return _no("account", args.account_id)
    key, plaintext = created
    return {"id": key.id, "key": plaintext, "prefix": key.prefix, "created_at": key.created_at}


async def _revoke_key(operations: AccountOperations, _: Settings, args: Args) -> Any:
    async with operations.begin(_actor()) as changes:
        key = await changes.revoke_key(args.key_id)
    if key is None:
        return _no("key", args.key_id)
    return {"id": key.id, "revoked_at": key.revoked_at}


if __name__ == "__main__":
    raise SystemExit(main())
