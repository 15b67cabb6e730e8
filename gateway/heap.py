"""The serving process's heap, settled once the gateway has started.

Measured under load (``bench/hotpath.py``, one worker): the process holds ~290k objects after
start-up (modules, the classifier, SQLAlchemy's and pydantic's caches). CPython's full
collections walk all of them: ~100 ms each, a few a minute, ~8 % of the worker's CPU with
gen0/gen1, and each one a pause long enough to trip the 100 ms Redis limiter timeout into
fail-open. Start-up objects live as long as the process, so they are collected once and then
frozen out of the collector's view (``gc.freeze``, as CPython documents for pre-fork servers);
later garbage, cycles included, is collected as before.
"""

from __future__ import annotations

import gc


def settle_heap() -> int:
    """Collect once, then exclude everything alive from later collections; the objects
    frozen. Call once per process, after start-up, never in a process that builds apps
    repeatedly (tests): frozen objects are never collected, even when they become garbage."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
