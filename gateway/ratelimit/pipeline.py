"""Sends script calls to Redis at once when idle, and batched while busy.

A call made while nothing is in flight goes out at once, from the caller's own coroutine (no
added latency at low load). Calls made while a call or batch is in flight wait for it and then
go out together as one pipeline (no MULTI: each script is atomic on its own), so under load one
write and one read carry many decisions — the client-side cost of a round trip is most of a
decision's cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


@dataclass(slots=True)
class _Call:
    script: str
    sha: str
    keys: Sequence[str]
    args: Sequence[Any]
    future: asyncio.Future[Any]


class ScriptPipeline:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pending: list[_Call] = []
        self._busy = False
        self._batches: set[asyncio.Task[None]] = set()

    async def call(self, script: str, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending.append(_Call(script, sha, keys, args, future))
            return await future
        self._busy = True
        try:
            return await self._call_alone(script, sha, keys, args)
        finally:
            self._done()

    async def _call_alone(
        self, script: str, sha: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        try:
            return await self._redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its script cache
            await self._redis.script_load(script)
            return await self._redis.evalsha(sha, len(keys), *keys, *args)

    def _done(self) -> None:
        self._busy = False
        if self._pending:
            batch, self._pending = self._pending, []
            self._busy = True
            task = asyncio.create_task(self._send(batch))
            self._batches.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._done()

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute(batch)
            missing = [c for c, r in zip(batch, results, strict=True)
                       if isinstance(r, NoScriptError)]
            if missing:
                for script in {c.script for c in missing}:
                    await self._redis.script_load(script)
                retried = dict(zip(map(id, missing), await self._execute(missing), strict=True))
                results = [retried.get(id(c), r) for c, r in zip(batch, results, strict=True)]
        except Exception as exc:
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        for call, result in zip(batch, results, strict=True):
            if call.future.done():
                continue  # its caller gave up (timeout)
            if isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in batch:
                pipe.evalsha(call.sha, len(call.keys), *call.keys, *call.args)
            return list(await pipe.execute(raise_on_error=False))
