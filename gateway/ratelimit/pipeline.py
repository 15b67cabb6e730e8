"""Sends script calls to Redis at once when idle, and batched while busy.

A call made while no batch is in flight goes out immediately, alone (no added latency at low
load). Calls made while one is in flight wait for it and then go out together as one pipeline
(no MULTI: each script is atomic on its own), so under load one write and one read carry many
decisions — the client-side cost of a round trip is most of a decision's cost.
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
        self._in_flight: asyncio.Task[None] | None = None

    def call(
        self, script: str, sha: str, keys: Sequence[str], args: Sequence[Any]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(script, sha, keys, args, future))
        if self._in_flight is None:
            self._send_pending()
        return future

    def _send_pending(self) -> None:
        batch, self._pending = self._pending, []
        self._in_flight = asyncio.create_task(self._send(batch))
        self._in_flight.add_done_callback(self._sent)

    def _sent(self, _: asyncio.Task[None]) -> None:
        self._in_flight = None
        if self._pending:
            self._send_pending()

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute(batch)
            missing = [c for c, r in zip(batch, results, strict=True)
                       if isinstance(r, NoScriptError)]
            if missing:  # Redis restarted or flushed its script cache: load and retry once
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
        if len(batch) == 1:
            call = batch[0]
            try:
                return [await self._redis.evalsha(call.sha, len(call.keys), *call.keys,
                                                  *call.args)]
            except NoScriptError as exc:
                return [exc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in batch:
                pipe.evalsha(call.sha, len(call.keys), *call.keys, *call.args)
            return list(await pipe.execute(raise_on_error=False))
