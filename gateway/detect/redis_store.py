"""The shared store: windows, risk states and sketches in Redis, so every replica sees the same
history of an account (and the same risk), bounded per account.

Per micro-batch, one pipeline (one round trip): ``RPUSH`` + ``LTRIM`` + ``EXPIRE`` for each
account with new requests, ``LRANGE`` + ``HMGET`` for each account to score. Keys expire after
``ttl_s`` without traffic (a week by default: long enough to catch low-and-slow extraction).
Values are the fixed-size binary records of :func:`gateway.detect.window.encode`.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from redis.asyncio import Redis

from gateway.detect import behaviour, window
from gateway.detect.features import MINHASH_K, RequestFeatures
from gateway.detect.risk import RiskState
from gateway.detect.store import Fetched, Sketch

_SKETCH = struct.Struct(f"<{MINHASH_K}IdIdd")
_BEHAVIOUR = struct.Struct(f"<d{behaviour.DIMS}f")


def _encode_sketch(s: Sketch) -> bytes:
    """The fixed part, one byte for ``young``, then ``born`` and the behaviour profile (each
    absent in sketches written before it)."""
    out = _SKETCH.pack(*s.signature.tolist(), s.strength, s.network, s.score, s.ts) \
        + bytes([s.young])
    if s.behaviour is not None:
        out += _BEHAVIOUR.pack(s.born, *s.behaviour.tolist())
    return out


def _decode_sketch(blob: bytes) -> Sketch:
    v = _SKETCH.unpack_from(blob)
    young = len(blob) > _SKETCH.size and blob[_SKETCH.size] == 1
    profile, born = None, 0.0
    if len(blob) >= _SKETCH.size + 1 + _BEHAVIOUR.size:
        b = _BEHAVIOUR.unpack_from(blob, _SKETCH.size + 1)
        born, profile = b[0], np.array(b[1:], dtype=np.float32)
    return Sketch(np.array(v[:MINHASH_K], dtype=np.uint32), v[MINHASH_K], v[MINHASH_K + 1],
                  v[MINHASH_K + 2], v[MINHASH_K + 3], young, profile, born)


def _bytes(value: object) -> bytes:
    """Redis replies as bytes (the client is not asked to decode)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"unexpected Redis reply {type(value).__name__}")


class RedisStore:
    def __init__(self, redis: Redis, window: int, ttl_s: int = 7 * 86400,
                 prefix: str = "gw:det", owns_client: bool = False) -> None:
        self.redis = redis
        self.window = window
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._owns = owns_client

    def _w(self, account: str) -> str:
        return f"{self.prefix}:w:{{{account}}}"

    def _r(self, account: str) -> str:
        return f"{self.prefix}:r:{{{account}}}"

    async def exchange(self, appends: Sequence[tuple[str, RequestFeatures]],
                       fetch: Iterable[str]) -> Fetched:
        grouped: dict[str, list[bytes]] = defaultdict(list)
        for account, item in appends:
            grouped[account].append(window.encode(item))
        wanted = list(fetch)
        pipe = self.redis.pipeline(transaction=False)
        for account, blobs in grouped.items():
            key = self._w(account)
            pipe.rpush(key, *blobs)
            pipe.ltrim(key, -self.window, -1)
            pipe.expire(key, self.ttl_s)
        for account in wanted:
            pipe.lrange(self._w(account), 0, -1)
            pipe.hmget(self._r(account), "risk", "updated", "peak")
        results = await pipe.execute()
        tail = results[3 * len(grouped):]
        windows: dict[str, list[RequestFeatures]] = {}
        risks: dict[str, RiskState] = {}
        for i, account in enumerate(wanted):
            windows[account] = [window.decode(b) for b in tail[2 * i]]
            risk, updated, peak = tail[2 * i + 1]
            risks[account] = RiskState(float(risk or 0), float(updated or 0), float(peak or 0))
        return Fetched(windows, risks)

    async def save(self, risks: Mapping[str, RiskState], sketches: Mapping[str, Sketch]) -> None:
        if not risks and not sketches:
            return
        pipe = self.redis.pipeline(transaction=False)
        for account, state in risks.items():
            key = self._r(account)
            pipe.hset(key, mapping={"risk": state.risk, "updated": state.updated,
                                    "peak": state.peak_score})
            pipe.expire(key, self.ttl_s)
        if sketches:
            pipe.hset(f"{self.prefix}:sketch",
                      mapping={a: _encode_sketch(s) for a, s in sketches.items()})
            pipe.zadd(f"{self.prefix}:seen", {a: s.ts for a, s in sketches.items()})
        await pipe.execute()

    async def set_risk(self, account: str, state: RiskState) -> None:
        await self.save({account: state}, {})

    async def sketches(self, since: float) -> dict[str, Sketch]:
        seen = f"{self.prefix}:seen"
        stale = await self.redis.zrangebyscore(seen, "-inf", f"({since}")
        if stale:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(seen, *stale)
            pipe.hdel(f"{self.prefix}:sketch", *stale)
            await pipe.execute()
        raw = [_bytes(a) for a in await self.redis.zrangebyscore(seen, since, "+inf")]
        if not raw:
            return {}
        blobs = await self.redis.hmget(f"{self.prefix}:sketch", raw)
        return {a.decode(): _decode_sketch(_bytes(b))
                for a, b in zip(raw, blobs, strict=True) if b is not None}

    async def try_lock(self, name: str, ttl_ms: int) -> bool:
        """A best-effort lease so that one replica at a time runs a periodic job."""
        return bool(await self.redis.set(f"{self.prefix}:lock:{name}", b"1", nx=True, px=ttl_ms))

    async def close(self) -> None:
        if self._owns:
            await self.redis.aclose()
