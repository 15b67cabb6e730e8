"""The one way tests wait for something to happen: poll a condition until it holds.

Every wait in the tests goes through :func:`wait_until` (or :func:`wait_until_async` inside a
coroutine, where sleeping must yield to the event loop that does the work being waited for),
so that a timeout always reads the same way, names what never happened, and deadlines are set
in one place. A timeout bounds a hang; it asserts no timing, except where a test says so by
passing its own small ``timeout`` (e.g. cancellation within a second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: How long to wait for a process or server a test starts (``gateway serve``, ``gateway demo``,
#: the model server, Prometheus) to answer. Generous on purpose: a healthy start takes a few
#: seconds, but a cold start on a busy CI machine (a fresh clone, two cores shared with other
#: jobs, torch and the demo model loading from a cold disk cache) once took over 30 s. Waiting
#: longer costs nothing when things work, and a start that truly hangs still fails.
STARTUP_TIMEOUT_S = 180.0

#: The default for everything else: the system under test reacting (a record written, a metric
#: updated, a connection dropped), which takes milliseconds when it works.
DEFAULT_TIMEOUT_S = 10.0


def wait_until(
    condition: Callable[[], T], *, timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = 0.05, what: str = "",
) -> T:
    """The first truthy value of ``condition()``, polled every ``interval`` seconds; an
    AssertionError naming ``what`` once ``timeout`` seconds have passed without one.

    ``condition`` is always called at least once, and once more after the deadline, so a slow
    poll cannot make a condition that just became true fail. Exceptions it raises propagate:
    a condition can fail fast (e.g. when the process it waits for has exited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what or _describe(condition)}")
        time.sleep(interval)


async def wait_until_async(
    # Not asyncio.timeout: that would cancel a poll in flight at the deadline, where this polls
    # once more after it, and the two helpers keep one signature.
    condition: Callable[[], Awaitable[T]], *, timeout: float = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109
    interval: float = 0.05, what: str = "",
) -> T:
    """:func:`wait_until` for coroutines: ``condition`` is awaited, and the waits between
    polls let the event loop run (the work being waited for often runs on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what or _describe(condition)}")
        await asyncio.sleep(interval)


def _describe(condition: Callable[..., object]) -> str:
    """Where the condition was written, for a timeout that was given no description."""
    code = getattr(condition, "__code__", None)
    if code is None:
        return repr(condition)
    return f"the condition at {code.co_filename}:{code.co_firstlineno}"
