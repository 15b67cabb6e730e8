"""The shared store: windows, risk states and sketches in Redis, so every replica sees the same
history of an account (and the same risk), bounded per account.

Per micro-batch, one pipeline (one round trip): ``RPUSH`` + ``LTRIM`` + ``EXPIRE`` for each
account with new requests, ``LRANGE`` + ``HMGET`` for each account to score. Keys expire after
``ttl_s`` without traffic (a week by default: long enough to catch low-and-slow extraction).
Values are the fixed-size binary records of :func:`gateway.detect.window.encode`.

On a Redis Cluster: an account's keys carry the hash tag ``{account}`` (its window and risk share
a slot; accounts spread over the nodes), and the cluster client splits each pipeline per node.
The campaign sketches — the one read that covers every account — are spread over
``sketch_shards`` pairs of keys, ``{prefix}:sketch:{sNN}`` (hash: account → sketch) and
``{prefix}:seen:{sNN}`` (sorted set: account → time), an account in the shard of its CRC-32, so
no single slot holds every account and every replica's writes; a sweep reads all the shards in
one pipeline (one round trip per node, concurrently). Sketches written by earlier versions to the
single pair ``{prefix}:sketch`` / ``{prefix}:seen`` are still read (and pruned) by the sweep, so
an upgrade loses no campaign state; nothing writes there any more, and the pair empties (Redis
deletes it) once its entries are older than the campaign horizon.
"""

from __future__ import annotations

import struct
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from gateway.detect import behaviour, window
from gateway.detect.features import MINHASH_K, RequestFeatures
from gateway.detect.risk import RiskState
from gateway.detect.window_store import Fetched, Sketch
from gateway.redis_client import RedisClient

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


class RedisWindowStore:
    def __init__(self, redis: RedisClient, window: int, ttl_s: int = 7 * 86400,
                 prefix: str = "gw:det", owns_client: bool = False,
                 sketch_shards: int = 16) -> None:
        self.redis = redis
        self.window = window
        self.ttl_s = ttl_s
        self.prefix = prefix
        self.sketch_shards = sketch_shards
        self._owns = owns_client

    def _shard(self, account: str) -> int:
        return zlib.crc32(account.encode()) % self.sketch_shards

    def _sketch_keys(self, shard: int | None) -> tuple[str, str]:
        """The (hash, sorted set) of one shard; ``None``: the single pair of earlier versions."""
        if shard is None:
            return f"{self.prefix}:sketch", f"{self.prefix}:seen"
        tag = f"{{s{shard:02d}}}"
        return f"{self.prefix}:sketch:{tag}", f"{self.prefix}:seen:{tag}"

    def _all_sketch_keys(self) -> list[tuple[str, str]]:
        return [self._sketch_keys(None), *map(self._sketch_keys, range(self.sketch_shards))]

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
            pipe.hmget(self._r(account), "risk", "updated", "peak", "coverage", "read")
        results = await pipe.execute()
        tail = results[3 * len(grouped):]
        windows: dict[str, list[RequestFeatures]] = {}
        risks: dict[str, RiskState] = {}
        for i, account in enumerate(wanted):
            windows[account] = [window.decode(b) for b in tail[2 * i]]
            risk, updated, peak, covered, read = tail[2 * i + 1]
            risks[account] = RiskState(float(risk or 0), float(updated or 0), float(peak or 0),
                                       bytes(covered or b""), bytes(read or b"").decode())
        return Fetched(windows, risks)

    async def save(self, risks: Mapping[str, RiskState], sketches: Mapping[str, Sketch]) -> None:
        if not risks and not sketches:
            return
        pipe = self.redis.pipeline(transaction=False)
        for account, state in risks.items():
            key = self._r(account)
            pipe.hset(key, mapping={"risk": state.risk, "updated": state.updated,
                                    "peak": state.peak_score, "coverage": state.coverage,
                                    "read": state.read})
            pipe.expire(key, self.ttl_s)
        by_shard: dict[int, dict[str, Sketch]] = defaultdict(dict)
        for account, sketch in sketches.items():
            by_shard[self._shard(account)][account] = sketch
        for shard, group in by_shard.items():
            blobs, seen = self._sketch_keys(shard)
            pipe.hset(blobs, mapping={a: _encode_sketch(s) for a, s in group.items()})
            pipe.zadd(seen, {a: s.ts for a, s in group.items()})
        await pipe.execute()

    async def set_risk(self, account: str, state: RiskState) -> None:
        await self.save({account: state}, {})

    async def sketches(self, since: float) -> dict[str, Sketch]:
        """Every account's sketch written at ``since`` or later, from all the shards (and the
        pair of earlier versions); older ones are deleted on the way."""
        pairs = self._all_sketch_keys()
        pipe = self.redis.pipeline(transaction=False)
        for _, seen in pairs:
            pipe.zrangebyscore(seen, "-inf", f"({since}")
            pipe.zrangebyscore(seen, since, "+inf")
        ranges = await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        fresh: list[tuple[int, list[bytes]]] = []  # (position of its HMGET, accounts)
        sent = 0
        for i, (blobs, seen) in enumerate(pairs):
            stale, wanted = ranges[2 * i], [_bytes(a) for a in ranges[2 * i + 1]]
            if stale:
                pipe.zrem(seen, *stale)
                pipe.hdel(blobs, *stale)
                sent += 2
            if wanted:
                pipe.hmget(blobs, wanted)
                fresh.append((sent, wanted))
                sent += 1
        if not sent:
            return {}
        replies = await pipe.execute()
        out: dict[str, Sketch] = {}
        for position, accounts in fresh:
            for account, blob in zip(accounts, replies[position], strict=True):
                if blob is None:
                    continue
                sketch = _decode_sketch(_bytes(blob))
                name = account.decode()
                if name not in out or sketch.ts >= out[name].ts:
                    out[name] = sketch
        return out

    async def try_lock(self, name: str, ttl_ms: int) -> bool:
        """A best-effort lease so that one replica at a time runs a periodic job (one key: on a
        cluster, the node that holds its slot)."""
        return bool(await self.redis.set(f"{self.prefix}:lock:{name}", b"1", nx=True, px=ttl_ms))

    async def close(self) -> None:
        if self._owns:
            await self.redis.aclose()
