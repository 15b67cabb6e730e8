"""Helpers for ``ratelimit.py``: in-process Redis/limiter timing, and gateway runs under wrk.

Part A (in-process): closed-loop coroutines that each await one operation at a time (PING, a raw
EVALSHA of the admit script, ``RedisBackend.admit``, ``AccountLimiter`` admit + settle) and record
every operation's latency with ``perf_counter_ns``; also the client's CPU time and the server's
own time per call (``INFO commandstats`` deltas).

Part B (gateway): ``gateway serve`` processes (one per configuration, all pinned to core 1) and
wrk pinned to core 0, reusing the static nginx upstream, the gateway set-up and the Lua script
of ``proxy_overhead.py`` (``overhead_*.py``, ``wrk/post_chat.lua``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from bench.proxy.overhead_gateway import GatewaySetup, gateway_executable
from bench.proxy.overhead_servers import (
    BENCH_DIR,
    BenchError,
    Managed,
    Processes,
    free_port,
    http_request,
    wait_until_up,
)
from gateway.domain.limits import TierLimits
from gateway.metrics import Metrics
from gateway.ratelimit.backend import AdmitRequest, InProcessBackend
from gateway.ratelimit.limiter import AccountLimiter
from gateway.ratelimit.redis_backend import RedisBackend
from gateway.ratelimit.redis_scripts import ADMIT
from gateway.redis_client import RedisClient
from gateway.redis_client import connect as connect_redis

HUGE = 10**12
GENEROUS = TierLimits(requests_per_minute=HUGE, tokens_per_minute=HUGE, tokens_per_day=HUGE,
                      max_concurrent=1_000_000)
COST = 100  # estimated tokens per request
LEASE_US = 60_000_000  # the gateway's default lease (60 s)
WRK = shutil.which("wrk") or "/usr/bin/wrk"
LUA_SCRIPT = BENCH_DIR / "wrk" / "post_chat.lua"
WRK_MARKER = "WRK_RESULT "
TICKS = os.sysconf("SC_CLK_TCK")
GATEWAY_CORE = "1"
LOAD_CORE = "0"

# One step = one iteration of a closed loop; returns the nanoseconds of each timed phase.
Step = Callable[[int], Awaitable[tuple[int, ...]]]


# ----------------------------------------------------------------------------- Part A


def connect(url: str) -> RedisClient:
    """A client with the gateway's own connection settings (``gateway/app.py``): one Redis, or a
    Redis Cluster for a ``redis+cluster://`` URL."""
    return connect_redis(url, timeout_s=1.0, retry_on_timeout=False)


@dataclass
class Cell:
    """One closed-loop run of one step at one concurrency."""

    op: str
    concurrency: int
    elapsed_s: float
    cpu_s: float
    phases: dict[str, list[int]]  # phase -> latencies (ns)
    server_us_per_call: float | None = None
    fallbacks: int = 0

    @property
    def iterations(self) -> int:
        return len(next(iter(self.phases.values())))

    def rate(self) -> float:
        return self.iterations / self.elapsed_s if self.elapsed_s else 0.0

    def cpu_us_per_op(self) -> float:
        return self.cpu_s * 1e6 / self.iterations if self.iterations else 0.0

    def pct_us(self, phase: str, q: float) -> float:
        data = sorted(self.phases[phase])
        if not data:
            return 0.0
        return data[min(len(data) - 1, int(q * len(data)))] / 1000


async def drive(step: Step, concurrency: int, duration_s: float, n_phases: int
                ) -> tuple[list[list[int]], float, float]:
    """Run ``concurrency`` coroutines looping over ``step`` until the deadline."""
    samples: list[list[int]] = [[] for _ in range(n_phases)]
    counter = itertools.count()
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        while time.perf_counter() < deadline:
            for bucket, ns in zip(samples, await step(next(counter)), strict=True):
                bucket.append(ns)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - t0, time.process_time() - cpu0


async def command_usec(redis: Redis, command: str) -> tuple[int, int]:
    """(calls, usec) so far for one command, from ``INFO commandstats``."""
    stats: dict[str, Any] = await redis.info("commandstats")
    entry = stats.get(f"cmdstat_{command}") or {}
    return int(entry.get("calls", 0)), int(entry.get("usec", 0))


@dataclass
class Steps:
    """The operations under test, over one client and a cycled set of account ids."""

    redis: Redis
    accounts: list[str]
    prefix: str
    backend: RedisBackend = field(init=False)
    limiter: AccountLimiter = field(init=False)
    sha: str = ""
    fallbacks: int = 0

    def __post_init__(self) -> None:
        metrics = Metrics(CollectorRegistry())  # this process's own, not the gateway's
        self.backend = RedisBackend(self.redis, metrics=metrics, prefix=self.prefix)
        self.limiter = AccountLimiter(
            RedisBackend(self.redis, metrics=metrics, prefix=self.prefix), metrics=metrics,
            fallback=InProcessBackend(),
            failure_mode="fail_open", timeout_s=0.025, lease_s=LEASE_US / 1e6,
        )

    async def load(self) -> None:
        self.sha = str(await self.redis.script_load(ADMIT))

    def account(self, i: int) -> str:
        return self.accounts[i % len(self.accounts)]

    async def ping(self, i: int) -> tuple[int, ...]:
        t0 = time.perf_counter_ns()
        await self.redis.ping()
        return (time.perf_counter_ns() - t0,)

    async def evalsha(self, i: int) -> tuple[int, ...]:
        """The admit script by hand: no Script wrapper, no result parsing, no ``decide``."""
        a = self.account(i)
        keys = [f"{self.prefix}:{{{a}}}:{n}" for n in ("req", "tpm", "tpd", "conc")]
        args: list[str | int] = ["", HUGE, HUGE, HUGE, 1_000_000, COST, os.urandom(8).hex(),
                                 LEASE_US]
        t0 = time.perf_counter_ns()
        await self.redis.evalsha(self.sha, 4, *keys, *args)
        return (time.perf_counter_ns() - t0,)

    async def admit(self, i: int) -> tuple[int, ...]:
        request = AdmitRequest(self.account(i), GENEROUS, COST, os.urandom(8).hex(), LEASE_US)
        t0 = time.perf_counter_ns()
        decision = await self.backend.admit(request)
        elapsed = time.perf_counter_ns() - t0
        if not decision.allowed:
            raise BenchError(f"backend rejected a request: {decision}")
        return (elapsed,)

    async def limiter_pair(self, i: int) -> tuple[int, ...]:
        a = self.account(i)
        t0 = time.perf_counter_ns()
        admission = await self.limiter.admit(a, GENEROUS, COST)
        t1 = time.perf_counter_ns()
        await self.limiter.settle(a, admission, COST + 10)
        t2 = time.perf_counter_ns()
        if not admission.allowed:
            raise BenchError(f"limiter rejected a request: {admission.error}")
        if admission.backend is not None and not isinstance(admission.backend, RedisBackend):
            self.fallbacks += 1
        return (t1 - t0, t2 - t1)

    def table(self) -> dict[str, tuple[Step, tuple[str, ...], str]]:
        """op -> (step, phase names, server command whose time is read from commandstats)."""
        return {
            "ping": (self.ping, ("op",), "ping"),
            "evalsha_raw": (self.evalsha, ("op",), "evalsha"),
            "backend_admit": (self.admit, ("op",), "evalsha"),
            "limiter_pair": (self.limiter_pair, ("admit", "settle"), "evalsha"),
        }

    async def clear(self) -> None:
        """Drop this run's keys (outside any timing), so that state never accumulates."""
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await self.redis.unlink(*batch)
                batch = []
        if batch:
            await self.redis.unlink(*batch)


async def measure_cell(steps: Steps, op: str, concurrency: int, duration_s: float) -> Cell:
    step, phases, command = steps.table()[op]
    steps.fallbacks = 0
    before = await command_usec(steps.redis, command)
    samples, elapsed, cpu = await drive(step, concurrency, duration_s, len(phases))
    after = await command_usec(steps.redis, command)
    calls = after[0] - before[0]
    server = (after[1] - before[1]) / calls if calls > 0 else None
    await steps.clear()
    return Cell(op, concurrency, elapsed, cpu, dict(zip(phases, samples, strict=True)), server,
                steps.fallbacks)


def parse_cpu_us(repeat: int = 20_000) -> float:
    """Client CPU per decision spent after the reply: ints from the reply, checks, ``decide``."""
    from gateway.ratelimit import gcra
    from gateway.ratelimit.backend import decide

    now = time.time_ns() // 1000
    reply = [1, 0, now] + [1, now, now + 60, 0, 1] * 3

    def once() -> None:
        values = [int(v) for v in reply]
        checks = {k: gcra.Check(values[s] == 1, values[s + 1], values[s + 2], values[s + 3],
                                values[s + 4] == 1)
                  for k, s in (("requests", 3), ("tokens_per_minute", 8), ("tokens_per_day", 13))}
        decide(values[0] == 1, values[1] == 1, checks, GENEROUS, values[2])

    t0 = time.process_time()
    for _ in range(repeat):
        once()
    return (time.process_time() - t0) * 1e6 / repeat


# ----------------------------------------------------------------------------- Part B


@dataclass(frozen=True)
class WrkRun:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


def parse_wrk(stdout: str) -> WrkRun:
    line = next((ln for ln in stdout.splitlines() if ln.startswith(WRK_MARKER)), None)
    if line is None:
        raise BenchError(f"wrk printed no {WRK_MARKER.strip()} line:\n{stdout[-2000:]}")
    data = json.loads(line[len(WRK_MARKER):])
    errors, latency = data["errors"], data["latency_us"]
    seconds = data["duration_us"] / 1e6
    return WrkRun(
        rps=data["requests"] / seconds if seconds else 0.0,
        p50_ms=latency["p50"] / 1000, p99_ms=latency["p99"] / 1000,
        requests=data["requests"], non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
    )


def run_wrk(url: str, concurrency: int, duration_s: float, body: Path, key: str) -> WrkRun:
    """Closed-loop wrk pinned to the load core: 2 threads, ``concurrency`` connections."""
    threads = 1 if concurrency == 1 else 2
    cmd = ["taskset", "-c", LOAD_CORE, WRK, f"-t{threads}", f"-c{concurrency}",
           f"-d{max(1, round(duration_s))}s", "--timeout", "10s", "-s", str(LUA_SCRIPT),
           f"{url}/v1/chat/completions"]
    env = {**os.environ, "WRK_BODY_FILE": str(body), "WRK_API_KEY": key}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=duration_s + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return parse_wrk(done.stdout)


def gateway_env(setup: GatewaySetup, config: str, redis_url: str, work_dir: Path,
                redis_timeout_s: float | None) -> dict[str, str]:
    """The set-up's environment with this configuration's database copy and limiter choice."""
    db = work_dir / f"{config}.db"
    shutil.copyfile(setup.work_dir / "bench.db", db)
    env = {**setup.env, "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
           "GATEWAY_REQUEST_LOG_SPILL_DIR": str(work_dir / f"spill-{config}")}
    env.pop("GATEWAY_REDIS_URL", None)
    env["GATEWAY_RATELIMIT_ENABLED"] = "false" if config == "off" else "true"
    if config == "redis":
        env["GATEWAY_REDIS_URL"] = redis_url
    if redis_timeout_s is not None:
        env["GATEWAY_RATELIMIT_REDIS_TIMEOUT_S"] = str(redis_timeout_s)
    return env


def start_gateway(procs: Processes, config: str, env: dict[str, str]) -> tuple[Managed, str]:
    port = free_port()
    cmd = ["taskset", "-c", GATEWAY_CORE, gateway_executable(), "serve", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    managed = procs.start(f"gateway-{config}", cmd, env)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(managed, f"{url}/healthz", timeout_s=60.0)
    return managed, url


def scrape(url: str) -> dict[str, float]:
    """Rate-limit figures from /metrics: decisions, decision-time sum/count, errors, fallback."""
    status, _, body = http_request(f"{url}/metrics", timeout_s=10.0)
    if status != 200:
        raise BenchError(f"{url}/metrics answered {status}")
    wanted = {
        "gateway_ratelimit_decisions_total": "decisions",
        "gateway_ratelimit_decision_seconds_sum": "decision_s_sum",
        "gateway_ratelimit_decision_seconds_count": "decision_count",
        "gateway_ratelimit_backend_errors_total": "backend_errors",
        "gateway_ratelimit_fallback_active": "fallback_active",
    }
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in body.decode(errors="replace").splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted and not line.startswith("#"):
            out[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return out


def evalsha_calls(url: str) -> int:
    """EVALSHA calls Redis has served so far (every client's: the share of others is small)."""
    client = SyncRedis.from_url(url, socket_timeout=5.0)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return int((stats.get("cmdstat_evalsha") or {}).get("calls", 0))


def group_cpu_s(pgid: int) -> float:
    """CPU time (user + system) of the live processes in one process group."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def readyz_mode(url: str) -> str:
    """The limiter mode the gateway reports on /readyz (``redis``, ``in_process``, ...)."""
    _, _, body = http_request(f"{url}/readyz", timeout_s=10.0)
    try:
        checks = json.loads(body).get("checks", {})
    except ValueError:
        return "?"
    return str(checks.get("ratelimit", "none"))
