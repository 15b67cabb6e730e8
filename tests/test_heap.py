"""The serving process freezes its start-up heap out of the garbage collector, and still
collects what becomes garbage later. Each case runs in a child process: a frozen heap is for
the life of the process, and the test process builds many apps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def _run(code: str, cwd: Path) -> list[str]:
    env = {**os.environ, "GATEWAY_MODE": "local", "HOME": str(cwd),
           "GATEWAY_DATABASE_URL": f"sqlite:///{cwd / 'gateway.db'}",
           "GATEWAY_REQUEST_LOG_SPILL_DIR": str(cwd / "spill")}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_settling_freezes_what_is_alive_and_later_cycles_are_still_collected(
    tmp_path: Path,
) -> None:
    before, frozen, collected, after = _run(
        "import gc\n"
        "from gateway.heap import settle_heap\n"
        "keep = [[i] for i in range(10_000)]\n"
        "print(gc.get_freeze_count())\n"
        "print(settle_heap())\n"
        "for _ in range(100):\n"
        "    a = []; a.append(a)\n"
        "del a\n"
        "print(gc.collect())\n"
        "print(gc.get_freeze_count())\n", tmp_path)
    assert int(before) == 0
    assert int(frozen) > 10_000  # the kept lists are among the frozen objects
    assert int(collected) >= 100  # the cycles made after settling are garbage, and collected
    assert int(after) == int(frozen)


def test_the_served_app_settles_its_heap_once_started_and_a_plain_app_does_not(
    tmp_path: Path,
) -> None:
    served, plain = _run(
        "import asyncio, gc\n"
        "from gateway.app import create_app, create_served_app\n"
        "async def frozen_after_start(app):\n"
        "    async with app.api.router.lifespan_context(app.api):\n"
        "        return gc.get_freeze_count()\n"
        "plain = asyncio.run(frozen_after_start(create_app()))\n"
        "served = asyncio.run(frozen_after_start(create_served_app()))\n"
        "print(served, plain)\n", tmp_path)
    assert int(plain) == 0
    assert int(served) > 10_000
