"""Files that can hold full prompts are private to the gateway's user: the spill directory
(0700) and everything in it, and the SQLite database (0600) — new ones, and existing ones
left world-readable by an earlier version."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import cli
from gateway.metrics import Metrics
from gateway.store.db import create_engine
from gateway.store.spill import SpillDir
from gateway.store.writer import RequestLogWriter
from tests.store.conftest import WriterFactory
from tests.store.helpers import record

LOOSE_NAMES = ("spill-1-aa-1.jsonl", "rejected-1-aa.jsonl", "spill-1-aa-2.corrupt",
               "quarantine.jsonl", "quarantine-index.jsonl")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes_of(directory: Path, prefix: str = "") -> dict[str, int]:
    """Name → permission bits of the files in ``directory`` whose name starts with ``prefix``."""
    return {p.name: mode(p) for p in directory.iterdir() if p.name.startswith(prefix)}


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common default umask (022), under which new files are world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


async def test_a_new_spill_directory_and_its_files_are_private(
    engine: AsyncEngine, make_writer: WriterFactory, tmp_path: Path
) -> None:
    spill = tmp_path / "state" / "spill"
    writer = make_writer(engine, spill_dir=spill, queue_max=1, replay_interval_s=3600)
    await writer.start()
    bad = record()
    bad.route = None  # type: ignore[assignment]  # refused: quarantined
    writer.submit(bad)
    await writer.flush()
    for _ in range(20):  # the queue overflows into the spill file
        writer.submit(record())
    await writer.flush()

    assert mode(spill) == 0o700
    modes = modes_of(spill)
    assert set(modes) >= {"quarantine.jsonl", "quarantine-index.jsonl"}
    assert any(name.startswith("spill-") for name in modes)
    assert modes == dict.fromkeys(modes, 0o600)


def test_an_existing_spill_directory_is_made_private_when_opened(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir(mode=0o755)
    for name in LOOSE_NAMES:
        (spill / name).write_text("{}\n")
        (spill / name).chmod(0o644)
    elsewhere = tmp_path / "not-ours.txt"
    elsewhere.write_text("x")
    elsewhere.chmod(0o644)
    (spill / "link").symlink_to(elsewhere)

    SpillDir(spill)

    assert mode(spill) == 0o700
    assert {name: mode(spill / name) for name in LOOSE_NAMES} == dict.fromkeys(LOOSE_NAMES, 0o600)
    assert mode(elsewhere) == 0o644  # a link is not followed


def test_the_writer_tightens_an_existing_spill_directory(tmp_path: Path, metrics: Metrics) -> None:
    spill = tmp_path / "spill"
    spill.mkdir(mode=0o777)
    spill.chmod(0o777)
    RequestLogWriter(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"), metrics=metrics,
                     spill_dir=spill)
    assert mode(spill) == 0o700


async def test_a_new_sqlite_database_is_private(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        modes = modes_of(tmp_path, "gateway.db")
        assert modes == dict.fromkeys(modes, 0o600)
        assert len(modes) >= 2  # the database and its WAL
    finally:
        await engine.dispose()


async def test_an_existing_world_readable_sqlite_database_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert mode(path) == 0o600


def test_the_demo_database_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``gateway demo`` up to the point where it would start serving."""

    async def no_serving(*_: object) -> None:
        return None

    monkeypatch.setattr(cli, "_serve_demo", no_serving)
    monkeypatch.setattr(cli, "_print_demo_banner", lambda *_: None)
    args = cli._parser().parse_args(["demo", "--upstream", "reference", "--state-dir",
                                     str(tmp_path / "demo")])
    assert isinstance(args, argparse.Namespace)

    assert cli._demo(args) == 0

    modes = modes_of(tmp_path / "demo", "gateway.db")
    assert modes
    assert modes == dict.fromkeys(modes, 0o600)
