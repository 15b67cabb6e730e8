"""A soak with faults: several gateway processes on PostgreSQL and Redis, under a mix of benign
and attacking clients, while a fault schedule runs; then it checks what must hold after them.

Setup (everything on loopback, everything throwaway):

* a fresh PostgreSQL database on the local server, migrated as production's
  (``tests.support.postgres``), and a private ``redis-server`` on a free port;
* a :class:`~tests.support.tcp_proxy.ThreadedTcpProxy` in front of each, through which every
  gateway reaches them, so the soak can cut them and give them back;
* the deterministic echo upstream in a thread, behind a wrapper whose delay the soak sets
  (the "slow upstream" fault);
* ``--gateways`` ``gateway serve --workers W`` processes in production mode, each on its own
  port with its own spill directory, ``GATEWAY_RATELIMIT_REPLICAS`` = gateways x workers;
* ``--benign`` accounts driven through the official ``openai`` SDK, each replaying a benign
  profile of held-out real traffic (``gateway.detect.offline.real_traffic``: labelling and
  translation batches, a person's conversations, a coding assistant, an evaluation harness, a CI
  smoke test, an organisation's template) at its own pace, with its parameters, streamed or not,
  chat or completions, from its own address (``X-Forwarded-For``, which the gateways trust), well
  under their limits; and ``--attackers`` accounts hammering raw HTTP with extraction-shaped
  requests (``logprobs``/``top_logprobs``, ``max_tokens=1``) against a tight tier, so the limiter
  says 429 most of the time; every client spreads its requests over all gateways.

Faults, in cycles that end a quiet tail (the concurrency lease plus a few seconds) before the
end, so that what they disturb has settled by the checks: PostgreSQL cut for ``--pg-cut-s``
(20 s), Redis cut for ``--redis-cut-s`` (10 s), ``kill -9`` of one gateway worker (uvicorn's
supervisor starts another), the upstream slowed by ``--slow-delay-s`` for ``--slow-s`` (15 s),
Redis killed and started again empty after ``--redis-restart-s`` (5 s; 0: never), and the spill
disks full for ``--disk-full-s`` (10 s; 0: never) with PostgreSQL cut for the first 60% of it
(each gateway's spill directory is a ``--spill-quota-mb`` tmpfs, which needs root; without it
the fault is skipped and says so). A cycle that does not fit the run is shrunk in proportion;
cycles repeat, 30 s apart, while they fit.

Checks, printed as a table (exit status 1 when one fails):

1. records: every request a client saw answered (2xx, body complete) has exactly one row in
   ``request_records`` once the gateways have stopped (graceful stop: queues flushed, spill
   replayed); none lost, none duplicated;
2. limits: per account, the admitted requests (rows whose status is not 429/403/503-limiter),
   replayed through GCRA at the account's requests-per-minute, are never over the limit outside
   the fail-open windows (Redis cut, plus the retry interval and a second; plus any moment a
   gateway's ``gateway_ratelimit_fallback_active`` was seen at 1; after a Redis restart the
   replay forgets, as Redis did, and what that let through is reported); inside them the
   admissions are reported against what one limiter would allow, and must stay under twice that
   plus one per replica (the fallback's local buckets, ``limit / replicas`` each);
3. slots: no concurrency slot alive in Redis once the clients stopped (``gw:rl:{acct}:conc``);
4. memory: RSS of every gateway process (supervisors and workers), sampled from /proc; the slope
   after warm-up is reported, and judged (under ``--max-rss-slope-mb-min``) only in runs of at
   least 10 minutes;
5. detection: accounts with a flag; a benign account flagged fails, an attacker not flagged is
   reported (judged with ``--require-attacker-flags``).

    .venv/bin/python -m bench.soak --duration 60       # ~2 minutes on 2 cores
    .venv/bin/python -m bench.soak --duration 1800     # the long soak

Needs PostgreSQL on 127.0.0.1:5432 (as the tests do) and ``redis-server`` on the PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from openai import APIConnectionError, APIStatusError, AsyncOpenAI

from bench.soak_redis import SoakRedis, soak_redis
from gateway.detect.offline.corpus import Limits, Pool, pool
from gateway.detect.offline.real_traffic import BENIGN_FNS, COMPLETIONS, Gen, Request, address
from gateway.domain.limits import default_tiers
from gateway.modelserver.echo import create_echo_app
from tests.support.postgres import discard_database, migrated_database
from tests.support.servers import free_port, serve_in_thread, stop_process, wait_healthy
from tests.support.tcp_proxy import ThreadedTcpProxy
from tests.support.waiting import wait_until

PERIOD_S = 60.0  # the requests-per-minute limit's period
RECOVERY_S = 30.0  # how long after a Redis fault ends its gateways may stay on the fallback
BENIGN_TIER, ATTACK_TIER = "soak-benign", "soak-tight"
BENIGN_RPM = 1200  # above the fastest profile's pace: benign accounts are never refused
NOT_ADMITTED = frozenset({429, 403})


# --- the upstream, slowed on demand ------------------------------------------------------------


class SlowableUpstream:
    """The echo upstream behind a delay the soak sets (``delay_s``) while a fault runs. Benign
    clients script their replies' lengths in ``lengths`` (prompt -> words) before sending, so
    that a replayed profile gets replies as long as the real model's: a translation batch
    answered in 8-23 words is no longer a translation batch to the detector."""

    def __init__(self) -> None:
        self.lengths: dict[str, int] = {}
        self.app = create_echo_app(self.lengths)
        self.delay_s = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        await self.app(scope, receive, send)


# --- processes ----------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class SpillQuota:
    """Each gateway's spill directory on its own small tmpfs (a disk quota), which the
    "disk-full" fault fills with a ballast file and frees again. Mounting needs root; without it
    the directories are plain and the fault is skipped (and says why)."""

    BALLAST = ".ballast"  # not a spill, journal or quarantine name: the gateway never reads it

    def __init__(self, directories: list[Path], megabytes: int) -> None:
        self.directories = directories
        self.mounted: list[Path] = []
        self.why_not = ""
        for directory in directories:
            directory.mkdir()
            if os.geteuid() != 0:
                self.why_not = "not root: no tmpfs quota to fill"
                continue
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700",
                                   "tmpfs", str(directory)], capture_output=True, text=True)
            if done.returncode:
                self.why_not = f"mount failed: {done.stderr.strip()[:120]}"
            else:
                self.mounted.append(directory)

    def fill(self) -> str:
        """Write ballast until the disk says no; returns what was written where."""
        filled = []
        for directory in self.mounted:
            written = 0
            with contextlib.suppress(OSError), open(directory / self.BALLAST, "ab") as ballast:
                chunk = b"\0" * (1 << 20)
                while True:
                    written += ballast.write(chunk)
                    ballast.flush()
            filled.append(f"{directory.name} +{written >> 20} MB")
        return ", ".join(filled)

    def free(self) -> None:
        for directory in self.mounted:
            with contextlib.suppress(FileNotFoundError):
                (directory / self.BALLAST).unlink()

    def close(self) -> None:
        for directory in self.mounted:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)
        self.mounted = []


@dataclass
class Gateway:
    index: int
    port: int
    env: dict[str, str]
    workers: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port),
                   "--workers", str(self.workers)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env={**os.environ, **self.env},
                                            stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self) -> None:
        wait_healthy(self.base, self.process, self.log)  # type: ignore[arg-type]

    def pids(self) -> list[int]:
        """The serving process and its workers (uvicorn's spawned children)."""
        if self.process is None or self.process.poll() is not None:
            return []
        workers = [p for p in _children(self.process.pid) if "spawn_main" in _cmdline(p)]
        return [self.process.pid, *workers]

    def workers_pids(self) -> list[int]:
        pids = self.pids()
        return pids[1:] if self.workers > 1 else pids

    def stop(self) -> int | None:
        """Graceful stop (SIGTERM: queues flushed); its exit status."""
        if self.process is None:
            return None
        return stop_process(self.process, timeout=60)


# --- the fault schedule -------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str  # pg-cut, redis-cut, kill-worker, slow-upstream
    start_s: float
    length_s: float
    detail: str = ""
    target: str = ""  # the gateway a kill-worker hit (its base URL)
    started_at: float | None = None  # wall clock, once run
    ended_at: float | None = None


def schedule(duration: float, quiet_tail: float, pg_s: float, redis_s: float, slow_s: float,
             restart_s: float, idle_s: float = 30.0, gap_s: float = 3.0, disk_s: float = 0.0
             ) -> list[Fault]:
    """Cycles of (PostgreSQL cut, Redis cut, kill -9, slow upstream, Redis restart, spill disk
    full; the last two when ``restart_s`` / ``disk_s`` > 0), one after the other with ``gap_s``
    between them and ``idle_s`` between cycles, from a warm-up to ``quiet_tail`` before the
    end; a first cycle that does not fit gets shorter gaps (at least 1 s), then shorter faults
    in proportion (at least 2 s each)."""
    warmup = min(10.0, duration * 0.15)
    span = duration - quiet_tail - warmup
    timed = [("pg-cut", pg_s), ("redis-cut", redis_s), ("slow-upstream", slow_s)]
    timed += [("redis-restart", restart_s)] if restart_s > 0 else []
    timed += [("disk-full", disk_s)] if disk_s > 0 else []
    lengths = [length for _, length in timed]
    fixed = (len(lengths) + 1) * gap_s
    if sum(lengths) + fixed > span:
        # shorter gaps first (down to 1 s), then shorter faults (down to 2 s each)
        gap_s = max(1.0, min(gap_s, (span - sum(lengths)) / (len(lengths) + 1)))
        fixed = (len(lengths) + 1) * gap_s
    if sum(lengths) + fixed > span:
        scale = max(span - fixed, 2.0 * len(lengths)) / sum(lengths)
        lengths = [max(2.0, round(x * scale, 1)) for x in lengths]
    cycle_kinds = [(kind, length) for (kind, _), length in zip(timed, lengths, strict=True)]
    cycle_kinds.insert(2, ("kill-worker", 0.0))
    cycle = sum(lengths) + fixed
    faults: list[Fault] = []
    t = warmup
    while t + cycle <= duration - quiet_tail + 1e-9 or not faults:
        for kind, length in cycle_kinds:
            faults.append(Fault(kind, t, length))
            t += length + gap_s
        t += idle_s
    return faults


# --- clients ------------------------------------------------------------------------------------


@dataclass
class Account:
    id: str
    key: str
    kind: str  # benign | attacker
    tier: str
    rpm: int
    index: int  # within its kind

    @property
    def name(self) -> str:
        return f"soak-{self.kind}-{self.index}"


@dataclass
class Outcome:
    account_id: str
    base: str
    started: float
    ended: float
    status: int  # 0: no HTTP answer (connection broken, stream cut)
    request_id: str | None
    complete: bool
    code: str | None = None  # the OpenAI-shaped error's code, for refusals


def error_code(body: object) -> str | None:
    """``error.code`` of an OpenAI-shaped error body, if it is one."""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


# Benign accounts replay held-out real traffic (gateway/detect/offline/real_traffic.py): the
# profiles a detector must leave alone, in this order, so that the first accounts carry load.
BENIGN_PROFILES = ("labelling_batch", "translation_batch", "user", "coding_assistant",
                   "eval_harness", "ci_smoke", "org_nat")
SESSION_REQUESTS = 200  # per generated session; a profile that runs out starts its next one


def benign_texts(conversations: int = 3000, modules: int = 40) -> Pool:
    """The held-out split (never trained on, never calibrated on), read in part: enough text for
    a soak's sessions without reading the whole corpus."""
    return pool("heldout", Limits(conversations=conversations, modules=modules))


def benign_schedule(profile: str, rng: random.Random, texts: Pool) -> Iterator[Request]:
    """The profile's requests, endlessly, with ``ts`` in seconds from the first: its sessions
    back to back (a batch job's next batch, a person's next conversation), each starting one of
    its own typical gaps after the last."""
    offset = 0.0
    while True:
        session = BENIGN_FNS[profile](Gen(rng, texts), SESSION_REQUESTS)[0]
        reqs = [r for r in session.requests if isinstance(r, Request)]
        first = reqs[0].ts
        for req in reqs:
            yield replace(req, ts=offset + req.ts - first)
        gaps = [b.ts - a.ts for a, b in itertools.pairwise(reqs)] or [1.0]
        offset += reqs[-1].ts - first + statistics.median(gaps)


def _benign_kwargs(req: Request) -> dict[str, Any]:
    """The request as the profile's client sends it (model aside)."""
    out: dict[str, Any] = {"model": "echo-1"}
    if req.route == COMPLETIONS:
        out["prompt"] = req.prompt
    else:
        out["messages"] = [{"role": "user", "content": req.prompt}]
    for name in ("max_tokens", "temperature"):
        if getattr(req, name) is not None:
            out[name] = getattr(req, name)
    if req.n > 1:
        out["n"] = req.n
    if req.logprobs:
        out["logprobs"] = (req.top_logprobs or 1) if req.route == COMPLETIONS else True
        if req.top_logprobs and req.route != COMPLETIONS:
            out["top_logprobs"] = req.top_logprobs
    return out


async def _benign_send(client: AsyncOpenAI, req: Request) -> tuple[int, str | None]:
    """One request through the SDK, streamed when the profile streams; (status, request id)."""
    kwargs = _benign_kwargs(req)
    api: Any = client.completions if req.route == COMPLETIONS else client.chat.completions
    if req.stream:
        stream = await api.create(stream=True, **kwargs)
        async for _ in stream:
            pass
        return stream.response.status_code, stream.response.headers.get("x-request-id")
    raw = await api.with_raw_response.create(**kwargs)
    raw.parse()
    return raw.status_code, raw.headers.get("x-request-id")


async def benign_loop(account: Account, bases: list[str], stop_at: float,
                      outcomes: list[Outcome], requests: Iterator[Request], address: str,
                      lengths: MutableMapping[str, int]) -> None:
    """Replay ``requests`` at their own pace (real time, not compressed: timing is evidence)
    from ``address`` (sent as X-Forwarded-For, which the soak's gateways trust), each reply
    scripted in ``lengths`` to the length the profile's real reply had."""
    clients = [AsyncOpenAI(base_url=b + "/v1", api_key=account.key, max_retries=0, timeout=60,
                           default_headers={"X-Forwarded-For": address})
               for b in bases]
    rng = random.Random(account.id)
    began = time.monotonic()
    try:
        for req in requests:
            due = began + req.ts
            if due >= stop_at:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            lengths[req.prompt] = max(1, req.completion_tokens)
            i = rng.randrange(len(bases))
            started = time.time()
            status, request_id, complete, code = 0, None, False, None
            try:
                status, request_id = await _benign_send(clients[i], req)
                complete = True
            except APIStatusError as exc:
                status = exc.status_code
                request_id = exc.response.headers.get("x-request-id")
                complete = True
                code = exc.code if isinstance(exc.code, str) else None
            except (APIConnectionError, httpx.HTTPError):
                pass
            outcomes.append(Outcome(account.id, bases[i], started, time.time(), status,
                                    request_id, complete, code))
    finally:
        for client in clients:
            await client.close()


async def attacker_loop(account: Account, bases: list[str], stop_at: float,
                        outcomes: list[Outcome], pace_s: float, seed: int, address: str
                        ) -> None:
    rng = random.Random(f"{account.id}:{seed}")
    headers = {"Authorization": f"Bearer {account.key}", "X-Forwarded-For": address}
    async with httpx.AsyncClient(timeout=60) as http:
        n = 0
        while time.monotonic() < stop_at:
            base = bases[rng.randrange(len(bases))]
            n += 1
            body = {"model": "echo-1", "max_tokens": 1, "temperature": 0, "logprobs": True,
                    "top_logprobs": 5,
                    "messages": [{"role": "user",
                                  "content": f"Complete: token probe {seed}-{n} the next word is"}]}
            started = time.time()
            status, request_id, complete, code = 0, None, False, None
            try:
                response = await http.post(base + "/v1/chat/completions", json=body,
                                           headers=headers)
                status, request_id = response.status_code, response.headers.get("x-request-id")
                complete = True
                if status >= 400:
                    with contextlib.suppress(ValueError):
                        code = error_code(response.json())
            except httpx.HTTPError:
                pass
            outcomes.append(Outcome(account.id, base, started, time.time(), status, request_id,
                                    complete, code))
            await asyncio.sleep(pace_s * (0.5 + rng.random()))


# --- the soak -----------------------------------------------------------------------------------


@dataclass
class Config:
    duration: float = 60.0
    gateways: int = 2
    workers: int = 2
    benign: int = 7
    attackers: int = 2
    attacker_concurrency: int = 3
    attack_rpm: int = 30
    attacker_pace_s: float = 0.1
    pg_cut_s: float = 20.0
    redis_cut_s: float = 10.0
    slow_s: float = 15.0
    redis_restart_s: float = 5.0
    disk_full_s: float = 10.0  # spill disks full, PostgreSQL cut inside it; 0: never
    spill_quota_mb: int = 32
    slow_delay_s: float = 1.5
    lease_s: float = 10.0
    redis_timeout_s: float = 1.0
    cluster: bool = False  # a three-primary Redis Cluster instead of one server
    detection: bool = True
    require_attacker_flags: bool = False
    kill_losses_ok: bool = False
    max_rss_slope_mb_min: float = 2.0
    sample_every_s: float = 2.0
    seed: int = 1
    keep: bool = False
    json_out: str | None = None


@dataclass
class Window:
    start: float
    end: float
    why: str
    resets: bool = False  # Redis came back empty: its limits start afresh after this window


@dataclass
class Check:
    name: str
    ok: bool | None  # None: reported, not judged
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def table(self) -> str:
        lines = ["", "soak: " + ", ".join(f"{k} {v}" for k, v in self.facts.items()
                                          if not isinstance(v, (dict, list))), ""]
        width = max(len(c.name) for c in self.checks)
        for check in self.checks:
            verdict = {True: "PASS", False: "FAIL", None: "info"}[check.ok]
            detail = check.detail.replace("\n", "\n" + " " * (width + 9))
            lines.append(f"{verdict:5}  {check.name:{width}}  {detail}")
        lines.append("")
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


class Soak:
    def __init__(self, config: Config, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.outcomes: list[Outcome] = []
        self.rss: dict[int, list[tuple[float, float]]] = {}
        self.rss_role: dict[int, str] = {}
        self.fallback_seen: list[tuple[float, str]] = []
        self.last_metrics: dict[str, str] = {}
        self.faults: list[Fault] = []
        self.gateways: list[Gateway] = []
        self.upstream = SlowableUpstream()
        self.texts = benign_texts()
        self.start_wall = 0.0
        self.last_fault_end = 0.0  # seconds into the run: no fault may last past it
        self._sampling = threading.Event()

    # --- setup ---

    def _tiers(self) -> str:
        tiers = {name: limits.model_dump() for name, limits in default_tiers().items()}
        tiers[BENIGN_TIER] = {"requests_per_minute": BENIGN_RPM, "tokens_per_minute": 10**7,
                              "tokens_per_day": 10**9, "max_concurrent": 8}
        tiers[ATTACK_TIER] = {"requests_per_minute": self.config.attack_rpm,
                              "tokens_per_minute": 10**7, "tokens_per_day": 10**9,
                              "max_concurrent": 2}
        return json.dumps(tiers)

    def _env(self, index: int, database_url: str, redis_url: str, upstream_url: str,
             secrets_: dict[str, str]) -> dict[str, str]:
        c = self.config
        spill = self.workdir / f"spill-{index}"
        env = {
            "GATEWAY_MODE": "production", "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_DATABASE_URL": database_url, "GATEWAY_REDIS_URL": redis_url,
            "GATEWAY_UPSTREAM_URL": upstream_url, "GATEWAY_UPSTREAM_READ_TIMEOUT_S": "30",
            "GATEWAY_REQUEST_LOG_SPILL_DIR": str(spill),
            "GATEWAY_REQUEST_LOG_REPLAY_INTERVAL_S": "0.5",
            "GATEWAY_RATELIMIT_REPLICAS": str(c.gateways * c.workers),
            "GATEWAY_RATELIMIT_LEASE_S": str(c.lease_s),
            "GATEWAY_RATELIMIT_REDIS_TIMEOUT_S": str(c.redis_timeout_s),
            "GATEWAY_TIERS": self._tiers(),
            "GATEWAY_DETECTION_ENABLED": "true" if c.detection else "false",
            "GATEWAY_TRUST_FORWARDED_FOR": "true",  # clients say where they are, as an LB would
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"metrics-{index}"),
            **secrets_,
        }
        (self.workdir / f"metrics-{index}").mkdir(exist_ok=True)
        return env

    def _create_accounts(self, admin_token: str) -> list[Account]:
        c = self.config
        accounts = []
        with httpx.Client(base_url=self.gateways[0].base, timeout=30,
                          headers={"Authorization": f"Bearer {admin_token}"}) as admin:
            for kind, count, tier, rpm in (("benign", c.benign, BENIGN_TIER, BENIGN_RPM),
                                           ("attacker", c.attackers, ATTACK_TIER, c.attack_rpm)):
                for i in range(count):
                    made = admin.post("/admin/v1/accounts",
                                      json={"name": f"soak-{kind}-{i}", "tier": tier})
                    made.raise_for_status()
                    account_id = made.json()["id"]
                    key = admin.post(f"/admin/v1/accounts/{account_id}/keys", json={})
                    key.raise_for_status()
                    accounts.append(Account(account_id, key.json()["key"], kind, tier, rpm, i))
        return accounts

    # --- background: RSS and fallback sampling ---

    def _sample_forever(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self._sampling.wait(self.config.sample_every_s):
                now = time.time()
                for gateway in self.gateways:
                    pids = gateway.pids()
                    for n, pid in enumerate(pids):
                        value = rss_mb(pid)
                        if value is not None:
                            self.rss.setdefault(pid, []).append((now, value))
                            role = "supervisor" if n == 0 and gateway.workers > 1 else "worker"
                            self.rss_role[pid] = f"gw{gateway.index} {role}"
                    with contextlib.suppress(httpx.HTTPError):
                        text = http.get(gateway.base + "/metrics").text
                        self.last_metrics[gateway.base] = text
                        for line in text.splitlines():
                            if (line.startswith("gateway_ratelimit_fallback_active")
                                    and float(line.rsplit(" ", 1)[1]) > 0):
                                self.fallback_seen.append((now, gateway.base))

    # --- faults ---

    async def _run_faults(self, pg: ThreadedTcpProxy, rds: SoakRedis) -> None:
        kills = itertools.count()
        for fault in self.faults:
            delay = self.start_wall + fault.start_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            late_by = time.time() - (self.start_wall + self.last_fault_end - fault.length_s)
            if late_by > 0:  # an earlier fault overran: keep the quiet tail quiet
                fault.detail = f"skipped: {late_by:.1f} s late"
                continue
            fault.started_at = time.time()
            if fault.kind == "pg-cut":
                await asyncio.to_thread(pg.cut)
                await asyncio.sleep(fault.length_s)
                await asyncio.to_thread(pg.restore)
            elif fault.kind == "redis-cut":
                await asyncio.to_thread(rds.cut)
                await asyncio.sleep(fault.length_s)
                await asyncio.to_thread(rds.restore)
            elif fault.kind == "redis-restart":  # down, then back empty (no persistence)
                fault.detail = await asyncio.to_thread(rds.kill)
                await asyncio.sleep(fault.length_s)
                await asyncio.to_thread(rds.start_again)
            elif fault.kind == "slow-upstream":
                self.upstream.delay_s = self.config.slow_delay_s
                await asyncio.sleep(fault.length_s)
                self.upstream.delay_s = 0.0
            elif fault.kind == "disk-full":
                await self._disk_full(fault, pg)
            elif fault.kind == "kill-worker":
                gateway = self.gateways[next(kills) % len(self.gateways)]
                fault.target = gateway.base
                fault.detail = await asyncio.to_thread(self._kill_worker, gateway)
            fault.ended_at = time.time()

    async def _disk_full(self, fault: Fault, pg: ThreadedTcpProxy) -> None:
        """Spill disks full, and PostgreSQL cut for the first 60% of it: the records have
        nowhere to go but memory; then PostgreSQL is back while the disks are still full (what
        memory held must reach it), then the disks are freed."""
        if not self.quota.mounted:
            fault.detail = f"skipped: {self.quota.why_not}"
            return
        fault.detail = await asyncio.to_thread(self.quota.fill)
        await asyncio.to_thread(pg.cut)
        await asyncio.sleep(fault.length_s * 0.6)
        await asyncio.to_thread(pg.restore)
        await asyncio.sleep(fault.length_s * 0.4)
        await asyncio.to_thread(self.quota.free)
        fault.detail += "; PostgreSQL cut for 60% of it"

    def _kill_worker(self, gateway: Gateway) -> str:
        workers = gateway.workers_pids()
        if not workers:
            return f"gw{gateway.index}: no worker to kill"
        victim = random.choice(workers)
        os.kill(victim, signal.SIGKILL)
        if gateway.workers == 1:  # no supervisor: restart the process on the same port
            assert gateway.process is not None
            gateway.process.wait()
            gateway.start()
            gateway.wait_healthy()
            return f"gw{gateway.index}: pid {victim} killed, process restarted"

        def replaced() -> bool:
            now = gateway.workers_pids()
            return len(now) == gateway.workers and victim not in now

        try:
            wait_until(replaced, timeout=60, interval=0.2, what="a worker replaced")
            return f"gw{gateway.index}: worker {victim} killed, replaced"
        except AssertionError:
            return f"gw{gateway.index}: worker {victim} killed, NOT replaced within 60 s"

    # --- run ---

    async def _drive(self, accounts: list[Account]) -> None:
        c = self.config
        bases = [g.base for g in self.gateways]
        stop_at = time.monotonic() + c.duration
        loops = []
        for account in accounts:
            rng = random.Random(f"{c.seed}:{account.name}")
            if account.kind == "benign":
                loops.append(benign_loop(account, bases, stop_at, self.outcomes,
                                         benign_schedule(benign_profile(account), rng,
                                                         self.texts),
                                         address(rng), self.upstream.lengths))
            else:
                where = address(rng)
                loops.extend(attacker_loop(account, bases, stop_at, self.outcomes,
                                           c.attacker_pace_s, seed, where)
                             for seed in range(c.attacker_concurrency))
        await asyncio.gather(*loops)

    def run(self) -> Report:
        c = self.config
        report = Report()
        rds = soak_redis(self.workdir / "redis", cluster=c.cluster)
        database_url: str | None = None
        database_url = asyncio.run(migrated_database("postgres", self.workdir))
        quiet_tail = c.lease_s + 8.0
        self.last_fault_end = c.duration - quiet_tail
        self.faults = schedule(c.duration, quiet_tail, c.pg_cut_s, c.redis_cut_s, c.slow_s,
                               c.redis_restart_s, disk_s=c.disk_full_s)
        self.quota = SpillQuota([self.workdir / f"spill-{i}" for i in range(c.gateways)],
                                c.spill_quota_mb)
        secrets_ = {
            "GATEWAY_ADMIN_TOKEN": secrets.token_hex(32),
            "GATEWAY_KEY_HASH_SECRET": secrets.token_hex(32),
            "GATEWAY_WATERMARK_SECRET": secrets.token_hex(32),
            "GATEWAY_UPSTREAM_API_KEY": secrets.token_hex(16),
        }
        sampler = threading.Thread(target=self._sample_forever, daemon=True)
        try:
            with ThreadedTcpProxy("127.0.0.1", 5432) as pg, \
                    serve_in_thread(self.upstream) as upstream_base:
                redis_url = rds.url
                for i in range(c.gateways):
                    env = self._env(i, pg.rewrite_url(database_url), redis_url,
                                    upstream_base + "/v1", secrets_)
                    gateway = Gateway(i, free_port(), env, c.workers,
                                      self.workdir / f"gateway-{i}.log")
                    self.gateways.append(gateway)
                    gateway.start()
                for gateway in self.gateways:
                    gateway.wait_healthy()
                accounts = self._create_accounts(secrets_["GATEWAY_ADMIN_TOKEN"])
                sampler.start()
                self.start_wall = time.time()

                async def main() -> None:
                    await asyncio.gather(self._drive(accounts),
                                         self._run_faults(pg, rds))

                asyncio.run(main())
                clients_stopped = time.time()
                time.sleep(1.0)  # deferred settles ("within a few ms")
                slots = rds.live_slots([a.id for a in accounts])
                self._sampling.set()
                sampler.join(timeout=10)
                exits = [g.stop() for g in self.gateways]
            spill_left = sum(p.stat().st_size for i in range(c.gateways)
                             for p in (self.workdir / f"spill-{i}").glob("spill-*.jsonl"))
            rows, flagged = asyncio.run(self._read_database(database_url, accounts))
            self._judge(report, accounts, rows, flagged, slots, spill_left, exits,
                        clients_stopped)
        finally:
            self._sampling.set()
            for gateway in self.gateways:
                with contextlib.suppress(Exception):
                    gateway.stop()
            rds.close()
            self.quota.close()
            if database_url is not None and not c.keep:
                asyncio.run(discard_database(database_url))
        return report

    async def _read_database(
        self, database_url: str, accounts: list[Account],
    ) -> tuple[list[asyncpg.Record], dict[str, list[str]]]:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT request_id, account_id, status_code, error_code, "
                "extract(epoch FROM created_at)::float8 AS t FROM request_records "
                "WHERE account_id = ANY($1::text[])", [a.id for a in accounts])
            flagged: dict[str, list[str]] = {}
            for r in await conn.fetch(
                    "SELECT fa.account_id, f.kind, f.reasons FROM flag_accounts fa "
                    "JOIN flags f ON f.id = fa.flag_id"):
                reasons = json.loads(r["reasons"]) if isinstance(r["reasons"], str) \
                    else r["reasons"]
                flagged.setdefault(r["account_id"], []).append(
                    f"{r['kind']}: {'; '.join(reasons or [])}")
        finally:
            await conn.close()
        return list(rows), flagged

    # --- checks ---

    def _windows(self) -> list[Window]:
        retry = 1.0
        windows = [Window(f.started_at, f.ended_at + retry + 1.0, f.kind.replace("-", " "),
                          resets=f.kind == "redis-restart")
                   for f in self.faults
                   if f.kind in ("redis-cut", "redis-restart") and f.started_at and f.ended_at]
        for t, base in self.fallback_seen:
            windows.append(Window(t - self.config.sample_every_s - 1.0, t + retry + 1.0,
                                  f"fallback seen at {base}"))
        windows.sort(key=lambda w: w.start)
        merged: list[Window] = []
        for w in windows:
            if merged and w.start <= merged[-1].end:
                merged[-1].end = max(merged[-1].end, w.end)
                merged[-1].resets = merged[-1].resets or w.resets
                if w.why not in merged[-1].why:
                    merged[-1].why += "; " + w.why
            else:
                merged.append(Window(w.start, w.end, w.why))
        return merged

    def _recovery_check(self, windows: list[Window]) -> Check:
        late = late_recoveries(windows, self.faults)
        return Check("2c fail-open ends after each Redis fault", not late,
                     f"{len(late)} window(s) lasting over {RECOVERY_S:.0f} s past their fault"
                     + "".join(f"\n  t+{w.start - self.start_wall:.0f}.."
                               f"{w.end - self.start_wall:.0f}s ({w.why})" for w in late))

    def _judge(self, report: Report, accounts: list[Account], rows: list[asyncpg.Record],
               flagged: dict[str, list[str]], slots: dict[str, int], spill_left: int,
               exits: list[int | None], clients_stopped: float) -> None:
        c = self.config
        statuses: dict[int, int] = {}
        for o in self.outcomes:
            statuses[o.status] = statuses.get(o.status, 0) + 1
        report.facts.update({
            "duration_s": round(clients_stopped - self.start_wall, 1),
            "gateways": f"{c.gateways}x{c.workers}", "accounts": len(accounts),
            "requests": len(self.outcomes), "answered_2xx": sum(
                1 for o in self.outcomes if 200 <= o.status < 300 and o.complete),
            "records": len(rows),
        })
        report.facts["statuses"] = dict(sorted(statuses.items()))
        counters = {name: metric_sum(self.last_metrics.values(), "gateway_" + name)
                    for name in ("request_log_spilled_total", "request_log_replayed_total",
                                 "request_log_quarantined_total",
                                 "ratelimit_backend_errors_total")}
        report.facts.update({k.removesuffix("_total"): int(v) for k, v in counters.items()})
        report.checks.append(Check("requests by status", None, ", ".join(
            f"{'no answer' if s == 0 else s}: {n}" for s, n in sorted(statuses.items()))))
        report.checks.append(Check("faults injected", None, "\n".join(
            f"t+{(f.started_at or 0) - self.start_wall:6.1f}s {f.kind:13} "
            f"{f.length_s:4.1f}s {f.detail}" for f in self.faults if f.started_at)
            + "".join(f"\n{f.kind} at t+{f.start_s:.0f}s {f.detail}" for f in self.faults
                      if not f.started_at and f.detail)
            or "none"))
        report.facts["faults"] = [asdict(f) for f in self.faults]

        # 1. records
        by_id: dict[str, int] = {}
        for r in rows:
            by_id[r["request_id"]] = by_id.get(r["request_id"], 0) + 1
        answered = [o for o in self.outcomes if 200 <= o.status < 300 and o.complete]
        lost = [o for o in answered if o.request_id not in by_id]
        # Refusals are evidence too (a 429 is a limit hit): every answer that named a request
        # id must have its record, except refusals before the key was verified (401, or
        # auth_unavailable while the account database is cut): they belong to no account and
        # served nothing; the gateway counts them in gateway_auth_failures_total instead.
        refused = [o for o in self.outcomes if o.status >= 400 and o.request_id
                   and o.status != 401 and o.code != "auth_unavailable"]
        refused_lost = [o for o in refused if o.request_id not in by_id]
        duplicated = [rid for rid, n in by_id.items() if n > 1]
        no_id = [o for o in answered if not o.request_id]
        kills = [(f.started_at, f.target) for f in self.faults
                 if f.kind == "kill-worker" and f.started_at]
        # answered by the gateway a kill -9 hit, in the second before it: the record was still
        # in the killed worker's memory (submitted after the reply, written behind it)
        at_kill = [o for o in lost if any(o.base == target and 0 <= k - o.ended <= 1.0
                                          for k, target in kills)]
        elsewhere = [o for o in lost if o not in at_kill]
        report.facts["records_lost"] = len(lost)
        report.facts["records_lost_at_kill"] = len(at_kill)
        report.facts["refused_records_lost"] = len(refused_lost)
        detail = (f"{len(answered)} answered, {len(elsewhere)} lost, {len(duplicated)} "
                  f"duplicated, {len(no_id)} without x-request-id; spill left {spill_left} B; "
                  f"gateway exits {exits}")
        if elsewhere:
            detail += "\nfirst lost: " + ", ".join(
                f"{o.request_id} t+{o.ended - self.start_wall:.1f}s {o.base}"
                for o in elsewhere[:5])
        report.checks.append(Check("1 one record per answered request",
                                   not elsewhere and not duplicated and not no_id, detail))
        report.checks.append(Check(
            "1r refusals recorded too", not refused_lost,
            f"{len(refused)} refused after authentication (4xx/5xx with a request id), "
            f"{len(refused_lost)} without a record"
            + "".join(f"\n  {o.request_id} {o.status} {o.code} t+{o.ended - self.start_wall:.1f}s"
                      for o in refused_lost[:5])))
        report.checks.append(Check(
            "1k none lost to a kill -9", True if not at_kill else
            (None if c.kill_losses_ok else False),
            f"{len(at_kill)} answered in the second before a kill -9 of their gateway have no "
            "record" + "".join(f"\n  {o.request_id} answered at t+{o.ended - self.start_wall:.2f}s"
                               f" by {o.base}" for o in at_kill[:5])
            + ("\n(tolerated: --kill-losses-ok)" if at_kill and c.kill_losses_ok else "")))

        # 2. limits
        windows = self._windows()
        report.facts["failopen_windows"] = [asdict(w) for w in windows]
        report.facts["failopen_s"] = round(sum(w.end - w.start for w in windows), 1)
        over_lines: list[str] = []
        excess_lines: list[str] = []
        ok = bounded = True
        for account in accounts:
            admitted = sorted(r["t"] for r in rows if r["account_id"] == account.id
                              and r["status_code"] not in NOT_ADMITTED
                              and r["error_code"] != "rate_limiter_unavailable")
            violations, excess = gcra_replay(admitted, account.rpm, windows, slack_s=1.0,
                                             replicas=c.gateways * c.workers)
            if any(w.resets for w in windows):
                # what the restarts' lost state let through on top (reported, not judged)
                remembered = [Window(w.start, w.end, w.why) for w in windows]
                forgotten = len(gcra_replay(admitted, account.rpm, remembered, slack_s=1.0,
                                            replicas=c.gateways * c.workers)[0]) - len(violations)
                if forgotten > 0:
                    excess_lines.append(f"{account.id}: {forgotten} admitted after a Redis "
                                        "restart that its lost state would have refused")
            if violations:
                ok = False
                over_lines.append(f"{account.id} ({account.kind}): {len(violations)} over "
                                  f"outside fail-open windows, first at t+"
                                  f"{violations[0] - self.start_wall:.1f}s")
            for w, count, single, bound in excess:
                if count > single:
                    excess_lines.append(
                        f"{account.id}: {count} admitted in window "
                        f"t+{w.start - self.start_wall:.0f}..{w.end - self.start_wall:.0f}s "
                        f"(one limiter: ≤{single}, bound {bound})")
                if count > bound:
                    bounded = False
        report.checks.append(Check(
            "2 admitted ≤ limit outside fail-open windows", ok,
            "\n".join(over_lines) or "0 over-admissions; fail-open windows: " + (", ".join(
                f"t+{w.start - self.start_wall:.0f}..{w.end - self.start_wall:.0f}s ({w.why})"
                for w in windows) or "none")))
        report.checks.append(Check("2b excess inside fail-open windows (bounded)", bounded,
                                   "\n".join(excess_lines) or "none over one limiter's allowance"))
        report.checks.append(self._recovery_check(windows))

        # 3. slots
        leaked = {a: n for a, n in slots.items() if n}
        report.checks.append(Check(
            "3 no leaked concurrency slot", not leaked,
            f"live slots after clients stopped: {leaked}" if leaked
            else f"0 live slots in {len(slots)} accounts"))

        # 4. memory
        long_run = c.duration >= 600
        warmup = max(10.0, 0.2 * c.duration)
        lines, worst = [], 0.0
        min_span = min(300.0, 0.5 * c.duration)  # a shorter series is too noisy to judge
        for pid, samples in sorted(self.rss.items()):
            # a replacement worker warms up too: from its own first sample
            after = [(t, v) for t, v in samples
                     if t >= max(self.start_wall, samples[0][0]) + warmup]
            slope = slope_per_min(after)
            judged = slope is not None and after[-1][0] - after[0][0] >= min_span
            if judged and slope is not None:
                worst = max(worst, slope)
            lines.append(f"{self.rss_role.get(pid, '?')} pid {pid}: "
                         f"{samples[0][1]:.0f}→{samples[-1][1]:.0f} MB, slope after warm-up "
                         + (f"{slope:+.2f} MB/min" if slope is not None else "n/a")
                         + f" ({len(after)} samples{'' if judged else ', too short to count'})")
        report.facts["rss_worst_slope_mb_min"] = round(worst, 3)
        report.checks.append(Check(
            "4 RSS slope per process", (worst <= c.max_rss_slope_mb_min) if long_run else None,
            "\n".join(lines) + ("" if long_run else "\n(judged only in runs ≥ 600 s)")))

        # 5. detection
        if not c.detection:
            report.checks.append(Check("5 flags", None, "detection off: not checked"))
        else:
            benign_flagged = [a for a in accounts if a.kind == "benign" and a.id in flagged]
            attackers = [a for a in accounts if a.kind == "attacker"]
            caught = [a.id for a in attackers if a.id in flagged]
            judged = not benign_flagged and (
                len(caught) == len(attackers) or not c.require_attacker_flags)
            report.checks.append(Check(
                "5 flags: attackers yes, benign no", judged,
                f"attackers flagged {len(caught)}/{len(attackers)}, benign flagged "
                f"{len(benign_flagged)}/{c.benign}"
                + ("" if c.require_attacker_flags else " (attackers not required)")
                + "".join(f"\n  {a.name} ({benign_profile(a)}): {' | '.join(flagged[a.id])}"
                          for a in benign_flagged)))


def late_recoveries(windows: list[Window], faults: list[Fault]) -> list[Window]:
    """Check 2c: the fail-open windows that outlast the Redis faults inside them by more than
    ``RECOVERY_S`` (a window with no fault inside counts from its start). A limiter that never
    gets its backend back widens its window to the end of the run, where check 2 would judge
    its admissions only against the bound."""
    ends = [f.ended_at for f in faults
            if f.kind in ("redis-cut", "redis-restart") and f.started_at and f.ended_at]
    return [w for w in windows
            if w.end - max((e for e in ends if w.start <= e <= w.end), default=w.start)
            > RECOVERY_S]


def benign_profile(account: Account) -> str:
    return BENIGN_PROFILES[account.index % len(BENIGN_PROFILES)]


def gcra_replay(
    admitted: list[float], rpm: int, windows: list[Window], *, slack_s: float, replicas: int,
) -> tuple[list[float], list[tuple[Window, int, int, int]]]:
    """Replay admissions (record times, sorted) through GCRA at ``rpm`` per minute, as Redis
    saw them: admissions inside a fail-open window never reached Redis, so they neither count
    nor consume, and after a window in which Redis restarted empty (``resets``) the replay
    forgets every earlier admission as Redis did. Returns the admissions outside the windows
    that GCRA would have refused (with ``slack_s`` for the record's time preceding the
    admission), and per window: the admissions inside it, what one limiter allows at most
    over its length (a burst plus the refill) and the bound (twice that plus one per replica:
    the local buckets' rounding)."""
    period_us = PERIOD_S * 1e6
    inc = period_us / rpm if rpm > 0 else period_us + 1
    tat = 0.0
    violations = []
    passed = 0  # windows entirely before the current admission
    for t in admitted:
        if any(w.start <= t <= w.end for w in windows):
            continue
        while passed < len(windows) and windows[passed].end < t:
            if windows[passed].resets:
                tat = 0.0  # Redis restarted empty: it forgot every earlier admission
            passed += 1
        now = t * 1e6
        new_tat = max(tat, now) + inc
        if new_tat - period_us > now + slack_s * 1e6:
            violations.append(t)
        tat = new_tat
    excess = []
    for w in windows:
        count = sum(1 for t in admitted if w.start <= t <= w.end)
        single = rpm + int((w.end - w.start) * rpm / PERIOD_S) + 1
        excess.append((w, count, single, 2 * single + replicas))
    return violations, excess


def metric_sum(texts: Any, name: str) -> float:
    """The sum of every sample of ``name`` (all label sets) over Prometheus text pages."""
    total = 0.0
    for text in texts:
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
                with contextlib.suppress(ValueError):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def slope_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (time s, MB) in MB per minute; None under 3 samples."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return None
    return 60 * sum((t - mt) * (v - mv) for t, v in samples) / var


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def run_soak(config: Config) -> Report:
    with workspace(config.keep) as workdir:
        report = Soak(config, workdir).run()
    if config.json_out:
        Path(config.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.json_out).write_text(json.dumps(
            {"config": asdict(config), "ok": report.ok, "facts": report.facts,
             "checks": [asdict(c) for c in report.checks]}, indent=2, default=str))
    return report


def parse_args(argv: list[str] | None = None) -> Config:
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif name == "json_out":
            parser.add_argument(flag, default=value,
                                help="write the report as JSON here (e.g. bench/results/soak.json)")
        else:
            parser.add_argument(flag, type=type(value), default=value)
    return Config(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    report = run_soak(parse_args(argv))
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
