"""Shared fixtures, and the markers every test gets by where it lives and what it uses.

Storage tests use the real PostgreSQL (127.0.0.1:5432) and rate-limit tests the real Redis
(127.0.0.1:6379), failing if down. The markers split the suite so that ``pytest -m unit`` runs
what needs neither (nor a server process) alone, on any machine:

- ``e2e``: everything under tests/e2e (a real gateway on a port or as a process);
- ``integration``: tests/deploy (Prometheus, promtool, docker-compose, the real services), and
  any test using a PostgreSQL or Redis fixture (``redis_cluster_url`` included: a real 3-node
  Redis Cluster on free ports, started once per run), a ``"postgres"`` parameter of a parametrized
  database fixture, or in a module listed in ``SERVICE_MODULES``;
- ``unit``: the rest.

A test may set one of the three itself (``@pytest.mark.e2e``), which then wins. Classification
is checked, not trusted: a unit test that connects to PostgreSQL's or Redis's port fails with a
message saying so, so ``-m unit`` stays runnable without services as tests change.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.metrics import Metrics
from gateway.store.db import create_engine, session_factory
from tests.support.postgres import (
    create_database,
    discard_database,
    drop_database,
    migrated_database,
)
from tests.support.redis_cluster import CLUSTER_PORTS, redis_cluster


@pytest.fixture
def metrics() -> Metrics:
    """The metrics a component under test records into, on a registry of this test's own: read
    them with ``metrics.registry.get_sample_value(name, labels)`` (no other test adds to them)."""
    return Metrics(CollectorRegistry())


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway, empty PostgreSQL database for the whole test run."""
    url = asyncio.run(create_database())
    yield url
    asyncio.run(drop_database(url))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture(params=["postgres", "sqlite"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of this test's own, migrated by the packaged Alembic migrations (as
    production's is), once on the real PostgreSQL and once on SQLite."""
    url = await migrated_database(request.param, tmp_path)
    try:
        yield url
    finally:
        await discard_database(url)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on :func:`db_url`, disposed after the test."""
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-primary Redis Cluster on free loopback ports, for the whole run (started on
    first use, a few seconds; see tests/support/redis_cluster.py): its ``redis+cluster://`` URL.
    Fails, never skips, where ``redis-server`` is missing."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield nodes.url


# --- markers: unit, integration, e2e -----------------------------------------------------------

KINDS = ("unit", "integration", "e2e")
TESTS = Path(__file__).parent
SERVICE_PORTS = frozenset({5432, 6379})  # PostgreSQL, Redis

#: Fixtures that hand a test the real PostgreSQL or Redis (directly or through another fixture).
SERVICE_FIXTURES = frozenset({
    "postgres_url", "fresh_postgres_url", "pg_url", "pg_engine",
    "migrated_postgres", "redis", "redis_backend", "redis_url", "redis_cluster_url",
})

#: Modules whose tests reach PostgreSQL or Redis without a fixture that says so (their own
#: connections or TCP proxies to the real ports), relative to tests/.
SERVICE_MODULES = frozenset({
    "ratelimit/test_limiter.py",
    "modelserver/test_signed_requests.py",
    "store/test_db_errors.py",
})


def _kind(item: pytest.Item) -> str:
    """Which of unit, integration, e2e ``item`` is (see the module docstring)."""
    for kind in KINDS:
        if item.get_closest_marker(kind) is not None:
            return kind
    relative = item.path.relative_to(TESTS).as_posix()
    if relative.startswith("e2e/"):
        return "e2e"
    if relative.startswith("deploy/") or relative in SERVICE_MODULES:
        return "integration"
    if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return "integration"
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "postgres" in callspec.params.values():
        return "integration"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test unit, integration or e2e, and the fuzzers fuzz, before ``-m`` selects."""
    for item in items:
        kind = _kind(item)
        if item.get_closest_marker(kind) is None:
            item.add_marker(kind)
        if item.path.name.startswith("test_fuzz_") and item.get_closest_marker("fuzz") is None:
            item.add_marker("fuzz")


@pytest.fixture(autouse=True)
def _unit_tests_reach_no_service(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    """In a unit test, refuse connections to PostgreSQL's and Redis's ports, and fail the test
    if it tried: it belongs in ``integration`` (add it to SERVICE_MODULES or use a service
    fixture). The refusal alone would not do: code under test may treat a refused connection
    as an outage and pass. Covers this process's sockets (asyncio included), not subprocesses."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    reached: list[Any] = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(address: Any) -> None:
        ports = SERVICE_PORTS | CLUSTER_PORTS  # the Redis Cluster's, while one runs
        if isinstance(address, tuple) and len(address) >= 2 and address[1] in ports:
            reached.append(address)
            raise ConnectionRefusedError(f"unit tests reach no service: {address}")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        refuse(address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        refuse(address)
        return connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    yield
    if reached:
        pytest.fail(f"{request.node.nodeid} is marked unit but connected to {reached[0]} "
                    "(PostgreSQL or Redis): make it integration (tests/conftest.py "
                    "SERVICE_MODULES, or a service fixture)", pytrace=False)
