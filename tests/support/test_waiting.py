"""The tests' one waiting helper: what it returns, how it fails, and that it fails fast."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support.waiting import wait_until, wait_until_async


def test_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert wait_until(lambda: [n] if (n := next(counter)) >= 3 else [], interval=0) == [3]


def test_a_timeout_names_what_never_happened() -> None:
    with pytest.raises(AssertionError, match=r"not within 0\.05 s: the sky falling"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, what="the sky falling")


def test_a_timeout_without_a_description_names_where_the_condition_is() -> None:
    with pytest.raises(AssertionError, match=r"test_waiting\.py:\d+"):
        wait_until(lambda: None, timeout=0.01, interval=0.01)


def test_an_exception_from_the_condition_stops_the_wait_at_once() -> None:
    calls = 0

    def exited() -> bool:
        nonlocal calls
        calls += 1
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until(exited, timeout=60)
    assert calls == 1


async def test_the_async_wait_lets_the_event_loop_do_the_work() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, done.set)

    async def is_done() -> bool:
        return done.is_set()

    assert await wait_until_async(is_done, timeout=5, interval=0.01) is True
    with pytest.raises(AssertionError, match="not within"):
        await wait_until_async(lambda: asyncio.sleep(0, False), timeout=0.02, interval=0.01)
