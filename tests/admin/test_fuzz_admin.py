"""Fuzzing the admin API from its own OpenAPI document (schemathesis), with every role.

For each operation of ``/admin/v1`` schemathesis generates valid and invalid requests (path ids,
query strings, JSON bodies) and sends them with a viewer's, a reviewer's and an admin's token,
against PostgreSQL and SQLite. Every response must:

- never be a 5xx;
- conform to the OpenAPI document (schemathesis' own checks: status codes, content types,
  headers and bodies as documented, invalid input refused), and accept valid input, save the two
  refusals no schema can express (an opaque cursor that decodes to nothing, an unconfigured
  tier);
- when it is an error, have exactly OpenAI's shape ``{"error": {message, type, param, code}}``;
- refuse a mutation (403) to a role below the one the operation needs.

Two phases: *coverage* (schemathesis' deterministic boundary and type-confusion cases, ~270
per role and database) and *fuzzing* (random cases, ``GATEWAY_FUZZ_EXAMPLES`` per operation,
role and database). Bounded for CI: coverage with the admin token only (every code path is open
to it), fuzzing with every role, 10 examples, derandomised — about 30 s here. Set
``GATEWAY_FUZZ_EXAMPLES`` to run coverage with every role and random fuzzing of that size::

    GATEWAY_FUZZ_EXAMPLES=500 pytest -m fuzz tests/admin/test_fuzz_admin.py
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from gateway.admin import AdminDeps
from gateway.auth.admin_tokens import AdminTokens
from gateway.domain.roles import Role
from gateway.metrics import Metrics
from gateway.store import flags as flag_store
from gateway.store import repository as repo
from tests.admin.conftest import ADMIN, REVIEWER, VIEWER, build_admin_app, make_settings
from tests.support.postgres import discard_database, migrated_database

pytestmark = pytest.mark.fuzz

LONG = "GATEWAY_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "10"))
HEADERS: dict[Role, dict[str, str]] = {"viewer": VIEWER, "reviewer": REVIEWER, "admin": ADMIN}
#: Operations that change nothing although they are POSTs.
READ_ONLY = {"POST /admin/v1/watermark/detect"}
#: Mutations a reviewer may make (banning and the like are re-checked inside; see routes.py).
REVIEWER_MAY = {"POST /admin/v1/accounts/{account_id}/actions",
                "POST /admin/v1/flags/{flag_id}/review"}
#: Refusals of a malformed request that come before the role is checked (by the guard in front
#: of the app, or by FastAPI while it reads the body).
REFUSED_BEFORE_ROLES = {
    "invalid_json", "request_too_large", "duplicate_parameter", "unknown_parameter",
}
#: 400s that schema-valid input may get: cursors are opaque, tiers are configuration.
SCHEMA_VALID_REFUSALS = {"invalid_cursor", "unknown_tier"}


class _Sessions:
    """The fuzzed app's session factory: the app is built once, at import (schemathesis reads
    its schema then), and each database fixture points this at its own database."""

    def __init__(self) -> None:
        self.current: async_sessionmaker[AsyncSession] | None = None

    def _factory(self) -> async_sessionmaker[AsyncSession]:
        if self.current is None:
            raise RuntimeError("no database for the fuzzed admin app yet")
        return self.current

    def __call__(self) -> AsyncSession:
        return self._factory()()

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self._factory().begin()


SETTINGS = make_settings()
SESSIONS = _Sessions()
DEPS = AdminDeps(sessions=cast(async_sessionmaker[AsyncSession], SESSIONS),
                 settings=SETTINGS, tokens=AdminTokens.from_settings(SETTINGS),
                 metrics=Metrics(CollectorRegistry()))
APP = build_admin_app(DEPS)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
TRIED: Counter[tuple[str, Role, str]] = Counter()
#: Derandomised in CI (a failure reproduces, and no example database is written); random and
#: remembered in a long run.
HYPOTHESIS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not LONG,
    database=settings.default.database if LONG else None,
    suppress_health_check=list(HealthCheck),
)


async def _prepare(kind: str, directory: Path) -> str:
    """A migrated database of the fuzz run's own, with an account, a key and a flag so that
    some ids exist."""
    url = await migrated_database(kind, directory)
    engine = create_async_engine(url, poolclass=NullPool)
    async with async_sessionmaker(engine).begin() as session:
        account = await repo.create_account(session, name="seed", tier="standard")
        await repo.create_key(session, account.id, b"fuzz-secret")
        await flag_store.create_flag(
            session, kind="account", account_ids=[account.id], score=0.5, model_version="m",
            reasons=["r"], evidence={"request_ids": []},
        )
    await engine.dispose()
    return url


@pytest.fixture(params=["postgres", "sqlite"], scope="module")
def fuzz_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[str]:
    """Point the fuzzed app at a real database. NullPool: schemathesis calls the app from its
    own event loop, and a pooled asyncpg connection belongs to the loop that opened it."""
    url = asyncio.run(_prepare(request.param, tmp_path_factory.mktemp("fuzz")))
    engine = create_async_engine(url)
    SESSIONS.current = async_sessionmaker(engine, expire_on_commit=False)
    started = time.monotonic()
    yield request.param
    SESSIONS.current = None
    asyncio.run(engine.dispose(close=False))
    asyncio.run(discard_database(url))
    _report(request, request.param, time.monotonic() - started)


def _report(request: pytest.FixtureRequest, db: str, seconds: float) -> None:
    """One line per database: examples per role and phase (the report asks for them)."""
    tried = {f"{role}/{phase}": n for (d, role, phase), n in sorted(TRIED.items()) if d == db}
    line = f"admin fuzz on {db}: {sum(tried.values())} examples in {seconds:.1f} s {tried}"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(line)


def assert_openai_error_shape(response: Any) -> None:
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str), body
    assert error["param"] is None or isinstance(error["param"], str), body
    assert error["code"] is None or isinstance(error["code"], str), body


def assert_valid_input_accepted(case: Any, response: Any) -> None:
    """schemathesis' positive_data_acceptance, less the refusals no schema can express."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if response.status_code == 400:
        code = response.json()["error"]["code"]
        assert code in SCHEMA_VALID_REFUSALS, (
            "schema-valid input refused", response.text, _curl(case, response))


def _curl(case: Any, response: Any) -> str:
    return str(case.as_curl_command(headers=dict(response.request.headers)))


def assert_role_enforced(case: Any, role: Role, response: Any) -> None:
    """A mutation above the caller's role is refused (a malformed request may be refused first).

    Only where the operation was called with the role's token: schemathesis also tries other
    methods on the same path, and requests without the token.
    """
    label = case.operation.label
    method = label.split(" ", 1)[0]
    if method == "GET" or label in READ_ONLY or role == "admin":
        return
    if role == "reviewer" and label in REVIEWER_MAY:
        return
    sent = response.request
    if sent.method != method or sent.headers.get("authorization") != HEADERS[role]["Authorization"]:
        return
    code = response.json().get("error", {}).get("code") if response.status_code >= 400 else None
    assert response.status_code == 403 or code in REFUSED_BEFORE_ROLES, (
        role, response.status_code, response.text, _curl(case, response))


def _in_budget(case: Any, role: Role, db: str) -> bool:
    """Coverage cases are sent only for the covered role and database, unless in a long run."""
    coverage = case.meta is not None and case.meta.phase.name.value == "coverage"
    return LONG or not coverage or (role, db) == ("admin", "postgres")


def _shapeless(case: Any) -> bool:
    """A query parameter generated as an object: a query string has no objects, so schemathesis
    sends only its keys (``{"ab": [1]}`` arrives as ``?target_id=ab``), and the request that
    reaches the app may be valid. Such a case is still sent and held to every other rule; only
    "invalid input refused" cannot be judged from what was generated."""
    return any(isinstance(value, dict) for value in (case.query or {}).values())


def exercise(case: Any, role: Role, db: str) -> None:
    """Send ``case`` as ``role`` and hold the response to every rule in the module docstring."""
    TRIED[(db, role, case.meta.phase.name.value if case.meta else "?")] += 1
    excluded = [schemathesis.checks.positive_data_acceptance]
    if _shapeless(case):
        excluded.append(schemathesis.checks.negative_data_rejection)
    response = case.call_and_validate(headers=HEADERS[role], excluded_checks=excluded)
    if response.status_code >= 400:
        assert_openai_error_shape(response)
    assert_valid_input_accepted(case, response)
    assert_role_enforced(case, role, response)


@pytest.mark.parametrize("role", list(HEADERS))
@SCHEMA.parametrize()
@HYPOTHESIS
def test_admin_api_survives_hostile_input(case: Any, role: Role, fuzz_db: str) -> None:
    if not _in_budget(case, role, fuzz_db):
        return
    exercise(case, role, fuzz_db)
