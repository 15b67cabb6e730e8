"""Sends script calls to Redis with as few round trips as ordering allows.

- A call made while nothing is in flight goes out at once, from the caller's own coroutine (no
  added latency at low load).
- Calls made while a call or batch is in flight wait for it and then go out together as one
  pipeline (no MULTI: each script is atomic on its own), so under load one write and one read
  carry many decisions — the client-side cost of a round trip is most of a decision's cost.
- Deferred calls (settlements: nobody waits for their answer) ride along, first, with the next
  call's round trip, or go out on their own after ``defer_s``. A pipeline runs in order, so a
  settlement is always applied before any admission made after it. (Scripts are loaded before
  their first use so that this holds; only a batch that meets a Redis restart, which empties the
  script cache, may see a settlement retried after an admission.)
- On one Redis, a batch goes out as *one* call of a combining script (``Combined``) that runs
  each call's script body in order and returns every reply: redis-py's pipeline costs ~10 µs of
  client CPU per command, the combined call a fraction of that. The batch is atomic as a whole,
  which only strengthens what each call's own atomicity promised.
- On a Redis Cluster each call's keys share the account's hash tag, so a call runs on one node;
  the cluster client splits a batch into one pipeline per node, sent concurrently, and keeps
  the order of the calls within each node (an account's calls all go to the same node, so its
  settlements still precede its later admissions). Scripts are loaded on every primary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from gateway.metrics import Metrics
from gateway.redis_client import RedisClient

log = logging.getLogger("gateway.ratelimit")
MAX_DEFERRED = 256


def as_outage(exc: Exception) -> Exception:
    """A failed round trip as the limiter can act on it. A connection whose transport closed
    under the client makes uvloop raise ``RuntimeError`` (not an ``OSError``) on the next
    write; seen with the cluster client while a node restarted, it reached the proxy as a 500.
    It is an outage like any other: a Redis ``ConnectionError``, so the limiter's fail-open or
    fail-closed choice applies."""
    if isinstance(exc, RuntimeError):
        return RedisConnectionError(f"Redis transport failed ({type(exc).__name__})")
    return exc


@dataclass(frozen=True, slots=True)
class Combined:
    """A script that runs many calls in one: ``tags`` names each combinable script's sha by
    the tag that precedes its arguments in the combined call's ARGV (keys: each call's, in
    order). Its reply is the list of the calls' replies."""

    script: str
    sha: str
    tags: dict[str, str]


@dataclass(slots=True)
class _Call:
    script: str
    sha: str
    keys: Sequence[str]
    args: Sequence[Any]
    future: asyncio.Future[Any] | None  # None: deferred, nobody waits


class ScriptPipeline:
    def __init__(
        self, redis: RedisClient, *, metrics: Metrics, defer_s: float = 0.005,
        combined: Combined | None = None,
    ) -> None:
        self._redis = redis
        self._combined = combined
        self._backend_errors = metrics.ratelimit_backend_errors
        self._defer_s = defer_s
        self._pending: list[_Call] = []
        self._deferred: list[_Call] = []
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._loaded: set[str] = set()

    async def call(self, script: str, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._busy or self._deferred:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending.append(_Call(script, sha, keys, args, future))
            if not self._busy:
                self._start_batch()
            return await future
        self._busy = True
        try:
            return await self._call_alone(script, sha, keys, args)
        finally:
            self._busy = False
            self._start_batch()

    def defer(self, script: str, sha: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        self._deferred.append(_Call(script, sha, keys, args, None))
        if len(self._deferred) >= MAX_DEFERRED:
            self._start_batch()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._defer_s, self._start_batch)

    async def drain(self) -> None:
        """Send everything deferred or pending, and wait until nothing is in flight."""
        while self._busy or self._deferred or self._pending or self._batches:
            self._start_batch()
            await asyncio.sleep(0.001)

    async def _call_alone(
        self, script: str, sha: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        if sha not in self._loaded:
            await self._load(script)
        try:
            return await self._redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its script cache
            self._loaded.clear()
            await self._load(script)
            return await self._redis.evalsha(sha, len(keys), *keys, *args)

    async def _load(self, script: str) -> None:
        self._loaded.add(await self._redis.script_load(script))

    def _start_batch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._busy or not (self._deferred or self._pending):
            return
        batch = self._deferred + self._pending
        self._deferred, self._pending = [], []
        self._busy = True
        task = asyncio.create_task(self._send(batch))
        self._batches.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._busy = False
        self._start_batch()

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute_retrying(batch)
        except Exception as exc:
            results = [as_outage(exc)] * len(batch)
        for call, result in zip(batch, results, strict=True):
            if call.future is None:
                if isinstance(result, Exception):
                    log.warning("deferred rate-limit call failed: %s", type(result).__name__)
                    self._backend_errors.labels(type(result).__name__[:40]).inc()
            elif call.future.done():
                continue  # its caller gave up (timeout)
            elif isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    async def _execute_retrying(self, batch: list[_Call]) -> list[Any]:
        combined = self._combinable(batch)
        for script, sha in _scripts(batch, combined):
            if sha not in self._loaded:
                await self._load(script)
        results = await self._execute(batch, combined)
        missing = [c for c, r in zip(batch, results, strict=True) if isinstance(r, NoScriptError)]
        if not missing:
            return results
        self._loaded.clear()
        combined = self._combinable(missing)
        for script, _ in _scripts(missing, combined):  # the script cache was flushed
            await self._load(script)
        retried = dict(zip(map(id, missing), await self._execute(missing, combined), strict=True))
        return [retried.get(id(c), r) for c, r in zip(batch, results, strict=True)]

    def _combinable(self, batch: list[_Call]) -> Combined | None:
        """The combining script, when it can carry ``batch`` (two calls or more, all its own)."""
        combined = self._combined
        if combined is None or len(batch) < 2:
            return None
        return combined if all(c.sha in combined.tags for c in batch) else None

    async def _execute(self, batch: list[_Call], combined: Combined | None) -> list[Any]:
        if combined is not None:
            return await self._execute_combined(combined, batch)
        return await self._execute_pipelined(batch)

    async def _execute_combined(self, combined: Combined, batch: list[_Call]) -> list[Any]:
        """One EVALSHA for the batch; a reply error (a flushed script cache) is every call's."""
        keys: list[Any] = []
        args: list[Any] = []
        for call in batch:
            keys += call.keys
            args.append(combined.tags[call.sha])
            args += call.args
        try:
            replies = await self._redis.execute_command(
                "EVALSHA", combined.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            return [exc] * len(batch)
        return list(replies)

    async def _execute_pipelined(self, batch: list[_Call]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in batch:
                # execute_command, not pipe.evalsha: a cluster pipeline refuses the latter by
                # name, yet routes EVALSHA by its keys (one slot per call) and splits the batch
                # per node.
                pipe.execute_command("EVALSHA", call.sha, len(call.keys), *call.keys, *call.args)
            return list(await pipe.execute(raise_on_error=False))


def _scripts(batch: list[_Call], combined: Combined | None) -> set[tuple[str, str]]:
    """The scripts ``batch`` runs: the combining one, or each call's own."""
    if combined is not None:
        return {(combined.script, combined.sha)}
    return {(c.script, c.sha) for c in batch}
