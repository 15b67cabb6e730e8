"""Headline hot-path benchmark (issue 14): what does each proxy cost per request, same run?

Needs the Debian packages ``nginx`` and ``wrk`` (``apt-get install -y nginx wrk``), ``taskset``
(util-linux), the project's .venv (``pip install -e .``: FastAPI, aiohttp, uvicorn, uvloop,
httptools come with it), and for setup 5 PostgreSQL on 127.0.0.1:5432 (user ``postgres``,
trust; ``psql`` on PATH) and Redis on 127.0.0.1:6379. A setup whose services are missing is
reported as skipped; the others still run.

Method (independent of ``proxy_overhead.py``, reusing only its process helpers):

* Upstream: a static nginx (one worker) answering POST /v1/chat/completions with a canned
  OpenAI chat completion (JSON workload) or a 20-chunk SSE stream (SSE workload), pinned to
  core 0 (``taskset -c 0``).
* Load: wrk with ONE thread (``-t1``), ``-c`` = concurrency (1, 16, 64), also pinned to core 0,
  POSTing a short chat request (bench/wrk/post_chat.lua).
* The proxy under test is alone on core 1 (``taskset -c 1``), one process / worker:
    1. ``upstream``   - none: wrk -> nginx directly;
    2. ``nginx``      - nginx reverse proxy with a keepalive pool;
    3. ``floor``      - minimal FastAPI + pooled aiohttp pass-through (passthrough_aiohttp.py)
                        under uvicorn, httptools + uvloop, one worker, no access log;
    4. ``gw-local``   - the gateway, local configuration: SQLite, in-process limits,
                        detection on (``gateway serve --workers 1``);
    5. ``gw-prod``    - the gateway, production configuration (``GATEWAY_MODE=production``):
                        PostgreSQL (a throwaway database, dropped at the end), Redis limits
                        (db 14), detection on, one worker.
  The gateway's bench account has a tier with limits far above what the box can send, so no
  request is ever refused with 429.
* Every setup is checked with one real request per workload (status 200, right body shape)
  before it is measured; every wrk run's "Non-2xx or 3xx responses" and socket errors are
  printed, and a run with any is flagged.
* Per setup / workload / concurrency: req/s (median of ``--repeats``), p50 latency (median),
  CPU per request of the proxy's process group (utime+stime from /proc/<pid>/stat, delta over
  the wrk run, divided by the requests wrk completed), and req/s ratios to the floor and to
  nginx measured in the same run. On a shared machine only same-run ratios mean anything.

    .venv/bin/python -m bench.hotpath                       # quick: 3 s runs, 1 repeat
    .venv/bin/python -m bench.hotpath --repeats 2 --duration 10
    .venv/bin/python -m bench.hotpath --only floor,gw-local --workload json
    .venv/bin/python -m bench.hotpath --only gw-local,gw-prod --workload json \\
        --concurrency 16 --duration 10 --profile bench/profiles --profile-tag before

Scaling (``--scaling 1,2,4,8``; issue 14: "two workers on two cores should give close to twice
one worker's throughput"): the floor and the gateway setups are started with 1, 2, 4, 8 worker
processes (uvicorn ``--workers N``), each worker pinned to a core of its own from
``--proxy-cores`` (the first N of them), while wrk and the upstream stay on ``--load-cores`` and
PostgreSQL / Redis, started outside the bench (``bench/device_scaling.sh`` does it on the
accelerator machine), run on cores of their own. Before a measurement the bench waits until
every worker has finished starting (its CPU time stops growing), so that wrk's connections are
spread over all of them, and it reports per cell the req/s, its ratio to one worker in the same
run, the CPU per request and how evenly the workers shared the load (least / most CPU of a
worker over the run). ``--json FILE`` writes every cell.

    .venv/bin/python -m bench.hotpath --scaling 1,2,4,8 --load-cores 0-1 --proxy-cores 4-11 \\
        --only upstream,floor,gw-local,gw-prod --workload json --concurrency 16,64
    bash bench/device_scaling.sh          # the same on the accelerator machine, kit included

``--profile DIR`` samples the proxy process with py-spy (``pip install py-spy``; non-blocking,
so the numbers of a profiled run are a little low) during each measured wrk run and writes, per
setup / workload / concurrency, a flame graph (``TAG_SETUP_WORKLOAD_cN.svg``), the collapsed
stacks (``.stacks.txt.gz``) and a summary by component and of the top self-time and cumulative
functions (``.top.txt``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.proxy.overhead_cpu import group_cpu_s
from bench.proxy.overhead_gateway import gateway_executable
from bench.proxy.overhead_payloads import (
    WORKLOADS,
    Workload,
    check_response,
    request_body,
)
from bench.proxy.overhead_servers import (
    BENCH_DIR,
    PROXY_CORE,
    UPSTREAM_CORE,
    BenchError,
    Managed,
    Processes,
    Upstream,
    free_port,
    http_request,
    log,
    log_tail,
    run_cli,
    start_nginx_proxy,
    start_passthrough,
    start_upstream,
    wait_until_up,
)
from bench.proxy.workers import (
    children_cpu_s,
    core_list,
    parse_cores,
    pin_workers,
    settle_workers,
)
from bench.ratelimit.ratelimit_support import WrkRun as ParsedWrk
from bench.ratelimit.ratelimit_support import parse_wrk

WRK = shutil.which("wrk") or "/usr/bin/wrk"
LUA_SCRIPT = BENCH_DIR / "wrk" / "post_chat.lua"
HUGE = 10**12
TIER = "bench"
PG_DSN = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/14"

SETUPS: dict[str, str] = {
    "upstream": "upstream alone (wrk -> nginx)",
    "nginx": "nginx reverse proxy",
    "floor": "Python floor (FastAPI+aiohttp)",
    "gw-local": "gateway, local (SQLite, in-proc limits)",
    "gw-prod": "gateway, production (PG, Redis limits)",
}
FLOOR, NGINX_SETUP = "floor", "nginx"
SCALED = ("floor", "gw-local", "gw-prod")
"""The setups ``--scaling`` starts with 1, 2, 4 ... workers; the others are measured once."""


# --- wrk ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WrkRun(ParsedWrk):
    """One wrk run, with the CPU the proxy under test spent during it."""

    proxy_cpu_s: float | None = None
    worker_cpu_s: tuple[float, ...] = ()
    """CPU (s) each worker of the proxy spent during the run, when the bench tracked them."""

    def balance(self) -> float | None:
        """Least / most CPU of a worker over the run: 1.0 is an even share."""
        if len(self.worker_cpu_s) < 2 or not max(self.worker_cpu_s):
            return None
        return min(self.worker_cpu_s) / max(self.worker_cpu_s)

    def cpu_per_req_us(self) -> float | None:
        if self.proxy_cpu_s is None or not self.requests:
            return None
        return self.proxy_cpu_s / self.requests * 1e6


def run_wrk(
    url: str, concurrency: int, duration_s: int, body_file: Path, key: str,
    proxy_pgid: int | None, profile_to: Path | None = None, load_cores: str = UPSTREAM_CORE,
    workers: list[int] | None = None,
) -> WrkRun:
    cmd = [
        "taskset", "-c", load_cores, WRK, "-t1", f"-c{concurrency}", f"-d{duration_s}s",
        "--timeout", "10s", "-s", str(LUA_SCRIPT), f"{url}/v1/chat/completions",
    ]
    env = {**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_API_KEY": key}
    before = group_cpu_s({proxy_pgid}) if proxy_pgid is not None else None
    each_before = children_cpu_s(proxy_pgid) if workers and proxy_pgid is not None else {}
    spies = ([] if profile_to is None or proxy_pgid is None
             else start_py_spy(proxy_pgid, duration_s, profile_to))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=duration_s + 60, check=False)
    after = group_cpu_s({proxy_pgid}) if proxy_pgid is not None else None
    each_after = children_cpu_s(proxy_pgid) if workers and proxy_pgid is not None else {}
    per_worker = tuple(each_after.get(p, 0.0) - each_before.get(p, 0.0) for p in workers or [])
    for spy in spies:
        spy.wait(timeout=60)
    if spies and profile_to is not None:
        summarise_profile(profile_to)
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    spent = None if before is None or after is None else after - before
    return WrkRun(**dataclasses.asdict(parse_wrk(done.stdout)), proxy_cpu_s=spent,
                  worker_cpu_s=per_worker)


# --- profiles ----------------------------------------------------------------------------------

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
PROFILE_RATE_HZ = 250
TOP_N = 40


def start_py_spy(pid: int, duration_s: int, stem: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy on the proxy (and its children) for the wrk run: a flame graph and raw stacks.

    Non-blocking sampling: the proxy is never paused, so the profile barely slows it."""
    if not Path(PY_SPY).exists():
        raise BenchError("py-spy not found (.venv/bin/pip install py-spy)")
    stem.parent.mkdir(parents=True, exist_ok=True)
    common = ["--pid", str(pid), "--subprocesses", "--nonblocking", "--rate",
              str(PROFILE_RATE_HZ), "--duration", str(duration_s)]
    return [subprocess.Popen([PY_SPY, "record", *common, "--format", fmt, "-o",
                              str(stem.with_suffix(suffix))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for fmt, suffix in (("flamegraph", ".svg"), ("raw", ".txt"))]


COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (component, markers): a sample goes to the first component one of whose markers is
    # anywhere in its stack, so the specific ones come first.
    ("detection: batcher, features, scoring (background)",
     ("DetectionEngine._run", "DetectionEngine._campaigns", "gateway/detect/")),
    ("request log: database batches (background)",
     ("RequestLogWriter._write_loop", "RequestLogWriter._replay", "RequestLogWriter._overflow",
      "aiosqlite", "sqlalchemy", "asyncpg")),
    ("request log hand-off: sanitise", ("sanitize_record",)),
    ("request log hand-off: journal", ("_journal_append",)),
    ("request log hand-off: other", ("RequestLogWriter.submit",)),
    ("detector hand-off", ("ClassifierDetector.observe",)),
    ("finish: metrics, record fields", ("ProxyApp._finish",)),
    ("rate limit: admit", ("AccountLimiter.admit",)),
    ("rate limit: settle", ("AccountLimiter.settle",)),
    ("rate limit: Redis batches (background)", ("ScriptPipeline", "redis/")),
    ("auth", ("ProxyApp._authenticate",)),
    ("record build", ("ProxyApp._new_record",)),
    ("request: read, parse, validate", ("ProxyApp._prepare", "read_body")),
    ("response: relay to the client", ("ProxyApp._relay_body", "ProxyApp._relay_stream",
                                       "ProxyApp._start")),
    ("upstream: HTTP exchange (http1; aiohttp in the floor)",
     ("ProxyApp._forward", "aiohttp/", "proxy/http1.py", "proxy/upstream.py")),
    ("proxy: other", ("ProxyApp", "GatewayApp")),
    ("server: uvicorn, httptools, FastAPI", ("uvicorn/protocols", "httptools", "fastapi/",
                                             "starlette/")),
    ("thread pool (to_thread work)", ("concurrent/futures",)),
    ("event loop and the rest", ("",)),
)


def summarise_profile(stem: Path) -> None:
    """Top functions by self time (the leaf frame) and by cumulative time (anywhere on the
    stack, counted once per sample), from py-spy's collapsed stacks, as ``STEM.top.txt``."""
    raw = stem.with_suffix(".txt")
    if not raw.exists():
        log(f"WARNING no py-spy output at {raw}")
        return
    own: dict[str, int] = {}
    cumulative: dict[str, int] = {}
    components: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        component = next(name for name, marks in COMPONENTS if any(m in stack for m in marks))
        components[component] = components.get(component, 0) + count
        frames = [_frame_name(f) for f in stack.split(";")[1:]]  # [0] is the process
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for name in set(frames):
            cumulative[name] = cumulative.get(name, 0) + count
    lines = [f"{raw.name}: {total} samples at {PROFILE_RATE_HZ} Hz", ""]
    for title, table in (("component", components), ("self", own),
                         ("cumulative", cumulative)):
        lines.append(f"top {TOP_N} by {title} time (% of samples)")
        for name, count in sorted(table.items(), key=lambda kv: -kv[1])[:TOP_N]:
            lines.append(f"  {100 * count / max(total, 1):6.2f}%  {name}")
        lines.append("")
    stem.with_suffix(".top.txt").write_text("\n".join(lines))
    # The collapsed stacks, compressed (a tenth of the size), for `zcat | flamegraph.pl` and
    # the like; the process line each stack starts with is dropped.
    stacks = "".join(line.split(";", 1)[1] + "\n" if ";" in line else ""
                     for line in raw.read_text(errors="replace").splitlines())
    with gzip.open(stem.with_suffix(".stacks.txt.gz"), "wt") as out:
        out.write(stacks)
    raw.unlink()


def _frame_name(frame: str) -> str:
    """``func (path/to/module.py:LINE)`` → ``func (module path)``, line dropped so that a
    function's samples add up."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


# --- the gateway -------------------------------------------------------------------------------

def tiers_json() -> str:
    limits = {"requests_per_minute": HUGE, "tokens_per_minute": HUGE,
              "tokens_per_day": HUGE, "max_concurrent": 100_000}
    throttled = {"requests_per_minute": 5, "tokens_per_minute": 5_000,
                 "tokens_per_day": 50_000, "max_concurrent": 1}
    return json.dumps({TIER: limits, "standard": limits, "throttled": throttled})


def gateway_command() -> list[str]:
    """The ``gateway`` console script beside this Python (the venv's); else, where the package
    is only on PYTHONPATH (the accelerator machine), ``python -m gateway.cli`` with this same
    Python, never another interpreter's script found on PATH; else whatever PATH has."""
    beside = Path(sys.executable).parent / "gateway"
    if beside.exists():
        return [str(beside)]
    if importlib.util.find_spec("gateway") is not None:
        return [sys.executable, "-m", "gateway.cli"]
    return [gateway_executable()]


def gateway_cli(env: dict[str, str], *args: str) -> dict[str, object]:
    """Run ``gateway <args>``; the last JSON object line it printed."""
    done = subprocess.run([*gateway_command(), *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"`gateway {' '.join(args)}` exited {done.returncode}:\n"
                         f"{done.stdout}\n{done.stderr}")
    for line in reversed(done.stdout.strip().splitlines()):
        if line.strip().startswith("{"):
            parsed: dict[str, object] = json.loads(line)
            return parsed
    return {}


def psql(pg_dsn: str, *sql: str) -> None:
    for statement in sql:
        done = subprocess.run(
            ["psql", "-d", f"{pg_dsn}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", statement],
            capture_output=True, text=True, timeout=60, check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"psql {statement!r}: {done.stderr.strip()}")


@dataclass
class GatewaySetup:
    env: dict[str, str]
    api_key: str
    pg_database: str | None = None
    pg_dsn: str = PG_DSN


def prepare_gateway(
    setup: str, work_dir: Path, pg_dsn: str = PG_DSN, redis_url: str = REDIS_URL
) -> GatewaySetup:
    """Schema, an account on the bench tier and a key, through the gateway's CLI."""
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_REQUEST_LOG_SPILL_DIR": str(work_dir / "spill"),
        "GATEWAY_TIERS": tiers_json(),
        "GATEWAY_DEFAULT_TIER": TIER,
        "GATEWAY_DETECTION_ENABLED": "true",
    }
    pg_database = None
    if setup == "gw-local":
        env |= {"GATEWAY_MODE": "local",
                "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{work_dir / 'bench.db'}"}
        env.pop("GATEWAY_REDIS_URL", None)
    else:
        if shutil.which("psql") is None:
            raise BenchError("psql not found (PostgreSQL client needed for gw-prod)")
        pg_database = f"gw_hotpath_{os.getpid()}_{secrets.token_hex(3)}"
        psql(pg_dsn, f"CREATE DATABASE {pg_database}")
        env |= {
            "GATEWAY_MODE": "production",
            "GATEWAY_DATABASE_URL": f"{pg_dsn}/{pg_database}",
            "GATEWAY_REDIS_URL": redis_url,
            "GATEWAY_ADMIN_TOKEN": secrets.token_hex(32),
            "GATEWAY_KEY_HASH_SECRET": secrets.token_hex(32),
            "GATEWAY_WATERMARK_SECRET": secrets.token_hex(32),
        }
    result = GatewaySetup(env=env, api_key="", pg_database=pg_database, pg_dsn=pg_dsn)
    try:
        gateway_cli(env, "migrate")
        account = gateway_cli(env, "accounts", "create", "--name", f"bench-{setup}",
                              "--tier", TIER)
        key = gateway_cli(env, "keys", "create", str(account["id"]))
        result.api_key = str(key["key"])
    except BaseException:
        drop_gateway(result)
        raise
    return result


def drop_gateway(setup: GatewaySetup) -> None:
    if setup.pg_database is not None:
        try:
            psql(setup.pg_dsn, f"DROP DATABASE IF EXISTS {setup.pg_database} WITH (FORCE)")
        except BenchError as exc:
            log(f"WARNING could not drop {setup.pg_database}: {exc}")
        setup.pg_database = None


def start_gateway(
    procs: Processes, name: str, setup: GatewaySetup, upstream_url: str, workers: int = 1,
    cores: str = PROXY_CORE,
) -> tuple[Managed, str]:
    port = free_port()
    env = {**setup.env, "GATEWAY_UPSTREAM_URL": f"{upstream_url}/v1"}
    cmd = ["taskset", "-c", cores, *gateway_command(), "serve", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers)]
    managed = procs.start(name, cmd, env)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(managed, f"{url}/healthz", timeout_s=60.0)
    return managed, url


# --- the run -----------------------------------------------------------------------------------

@dataclass
class Cell:
    setup: str
    workload: Workload
    concurrency: int
    runs: list[WrkRun] = field(default_factory=list)
    workers: int = 1

    def med(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))

    def cpu_us(self) -> float | None:
        values = [v for v in (r.cpu_per_req_us() for r in self.runs) if v is not None]
        return float(statistics.median(values)) if values else None

    def bad(self) -> tuple[int, int]:
        return sum(r.non_2xx for r in self.runs), sum(r.socket_errors for r in self.runs)

    def balance(self) -> float | None:
        values = [v for v in (r.balance() for r in self.runs) if v is not None]
        return float(statistics.median(values)) if values else None


@dataclass
class Options:
    duration_s: int
    repeats: int
    warmup_s: int
    concurrency: list[int]
    workloads: list[Workload]
    setups: list[str]
    profile_dir: Path | None = None
    profile_tag: str = "profile"
    workers: int = 1
    load_cores: list[int] = field(default_factory=lambda: parse_cores(UPSTREAM_CORE))
    proxy_cores: list[int] = field(default_factory=lambda: parse_cores(PROXY_CORE))
    pin_workers: bool = False
    scaling: list[int] = field(default_factory=list)
    pg_dsn: str = PG_DSN
    redis_url: str = REDIS_URL
    json_out: Path | None = None


@dataclass(frozen=True)
class Layout:
    """Where one launch of a proxy runs: its worker count and cores."""

    workers: int
    cores: list[int]
    pin: bool

    @property
    def cores_text(self) -> str:
        return core_list(self.cores)


class Bench:
    def __init__(self, opts: Options, procs: Processes, work_dir: Path) -> None:
        self.opts, self.procs, self.work_dir = opts, procs, work_dir
        self.cells: dict[tuple[str, Workload, int], Cell] = {}
        self.scaled: dict[tuple[str, int, Workload, int], Cell] = {}
        """``--scaling``: (setup, workers, workload, concurrency) -> cell."""
        self.skipped: dict[str, str] = {}
        self.problems: list[str] = []
        self.gateways: dict[str, GatewaySetup] = {}
        self.bodies = {}
        for w in WORKLOADS:
            path = work_dir / f"request-{w}.json"
            path.write_bytes(request_body(w))
            self.bodies[w] = path

    @property
    def load_cores(self) -> str:
        return core_list(self.opts.load_cores)

    def run(self) -> None:
        log(f"starting the static nginx upstream on core(s) {self.load_cores}")
        upstream = start_upstream(self.procs, self.load_cores)
        try:
            if self.opts.scaling:
                self._run_scaling(upstream)
                return
            for setup in self.opts.setups:
                if setup.startswith("gw-") and not self._prepare(setup):
                    continue
                for workload in self.opts.workloads:
                    # --workers is the gateway's; the others run one worker
                    is_gw = setup.startswith("gw-")
                    layout = Layout(self.opts.workers if is_gw else 1, self.opts.proxy_cores,
                                    self.opts.pin_workers and is_gw)
                    self._measure_setup(setup, workload, upstream, layout)
        finally:
            for gw in self.gateways.values():
                drop_gateway(gw)

    def _run_scaling(self, upstream: Upstream) -> None:
        """Worker count by worker count (all setups at 1, then all at 2, ...), so that a run
        cut short still has every setup's smaller counts."""
        setups = [s for s in self.opts.setups if not s.startswith("gw-") or self._prepare(s)]
        for workload in self.opts.workloads:
            for setup in (s for s in setups if s not in SCALED):  # upstream, nginx: once
                self._measure_setup(setup, workload, upstream,
                                    Layout(1, self.opts.proxy_cores[:1], False))
            for n in self.opts.scaling:
                for setup in (s for s in setups if s in SCALED):
                    self._measure_setup(setup, workload, upstream,
                                        Layout(n, self.opts.proxy_cores[:n], True))

    def _prepare(self, setup: str) -> bool:
        try:
            self.gateways[setup] = prepare_gateway(
                setup, self.work_dir / setup, self.opts.pg_dsn, self.opts.redis_url)
        except BenchError as exc:
            self.skipped[setup] = str(exc).splitlines()[0][:200]
            log(f"SKIP {setup}: {exc}")
            return False
        return True

    def _launch(
        self, setup: str, workload: Workload, upstream: Upstream, layout: Layout
    ) -> tuple[Managed | None, str]:
        url = upstream.base_url(workload)
        if setup == "upstream":
            return None, url
        if setup == "nginx":
            return start_nginx_proxy(self.procs, url, workload, layout.cores_text)
        if setup == "floor":
            return start_passthrough(self.procs, "passthrough_aiohttp", url, workload,
                                     layout.cores_text, layout.workers)
        return start_gateway(self.procs, f"{setup}-{workload}-w{layout.workers}",
                             self.gateways[setup], url, layout.workers, layout.cores_text)

    def _key(self, setup: str) -> str:
        gw = self.gateways.get(setup)
        return gw.api_key if gw is not None else "bench-passthrough-key"

    def _measure_setup(
        self, setup: str, workload: Workload, upstream: Upstream, layout: Layout
    ) -> None:
        scaled = bool(self.opts.scaling) and setup in SCALED
        where = ("" if setup == "upstream" else
                 f" - {layout.workers} worker{'s' if layout.workers > 1 else ''} on core(s) "
                 f"{layout.cores_text}{' (one each)' if layout.pin else ''}")
        log(f"[{workload}] {SETUPS[setup]}{where}")
        managed: Managed | None = None
        try:
            managed, url = self._launch(setup, workload, upstream, layout)
            workers: list[int] | None = None
            if managed is not None and setup != "nginx" and (layout.pin or layout.workers > 1):
                workers = settle_workers(managed, layout.workers)
                if layout.pin:
                    pin_workers(workers, layout.cores)
            headers = {"Content-Type": "application/json",
                       "Authorization": f"Bearer {self._key(setup)}"}
            status, ctype, body = http_request(f"{url}/v1/chat/completions",
                                               request_body(workload), headers)
            problem = check_response(workload, status, ctype, body,
                                     exact=not setup.startswith("gw-"))
            if problem is not None:
                raise BenchError(f"sample request: {problem}")
            log(f"    sample request: {status} {ctype}")
            pgid = managed.proc.pid if managed is not None else None
            for c in self.opts.concurrency:
                cell = self._measure(setup, workload, url, c, pgid, workers)
                if scaled:
                    self.scaled[(setup, layout.workers, workload, c)] = cell
                else:
                    self.cells[(setup, workload, c)] = cell
            if managed is not None and setup.startswith("gw-"):
                self._scan_log(setup, workload, managed)
        except BenchError as exc:
            self.problems.append(f"{setup}/{workload}/w{layout.workers}: {exc}")
            log(f"FAIL {setup}/{workload}/w{layout.workers}: {exc}")
            if managed is not None:
                log(log_tail(managed.log))
        finally:
            if managed is not None:
                self.procs.stop(managed, grace_s=40.0)

    def _measure(
        self, setup: str, workload: Workload, url: str, c: int, pgid: int | None,
        workers: list[int] | None = None,
    ) -> Cell:
        key, body = self._key(setup), self.bodies[workload]
        if self.opts.warmup_s > 0:
            warm = run_wrk(url, c, self.opts.warmup_s, body, key, None,
                           load_cores=self.load_cores)
            self._flag(setup, workload, c, warm, "warm-up")
        cell = Cell(setup, workload, c, workers=len(workers) if workers else 1)
        for i in range(self.opts.repeats):
            stem = None
            if self.opts.profile_dir is not None and setup != "upstream":
                suffix = f"_r{i + 1}" if self.opts.repeats > 1 else ""
                stem = self.opts.profile_dir / (
                    f"{self.opts.profile_tag}_{setup}_{workload}_c{c}{suffix}")
            run = run_wrk(url, c, self.opts.duration_s, body, key, pgid, stem,
                          load_cores=self.load_cores, workers=workers)
            self._flag(setup, workload, c, run, "run")
            cell.runs.append(run)
        cpu = cell.cpu_us()
        non2xx, sock = cell.bad()
        bal = cell.balance()
        log(f"    c{c:<3} {cell.med('rps'):>9,.0f} req/s  p50 {cell.med('p50_ms'):7.2f} ms"
            f"  p99 {cell.med('p99_ms'):7.2f} ms  CPU/req "
            f"{'-' if cpu is None else f'{cpu:.0f} us'}  non-2xx {non2xx}  socket errors {sock}"
            + ("" if bal is None else f"  worker balance {bal:.2f}"))
        return cell

    def _flag(self, setup: str, workload: Workload, c: int, run: WrkRun, what: str) -> None:
        if run.non_2xx or run.socket_errors:
            msg = (f"{setup}/{workload}/c{c} {what}: {run.non_2xx} non-2xx, "
                   f"{run.socket_errors} socket errors of {run.requests}")
            self.problems.append(msg)
            log(f"ERROR {msg}")

    def _scan_log(self, setup: str, workload: Workload, managed: Managed) -> None:
        """Errors, warnings and tracebacks the gateway logged while being measured."""
        text = managed.log.read_text(errors="replace") if managed.log.exists() else ""
        hits = [ln for ln in text.splitlines()
                if re.search(r"error|warning|traceback|exception|critical", ln, re.I)]
        if hits:
            distinct = list(dict.fromkeys(ln.strip()[:300] for ln in hits))
            msg = (f"{setup}/{workload}: {len(hits)} error/warning log lines: "
                   + " | ".join(distinct[:5]))
            self.problems.append(msg)
            log(f"WARNING {msg}")


# --- report ------------------------------------------------------------------------------------

def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ratio(bench: Bench, setup: str, ref: str, w: Workload, c: int) -> float | None:
    cell, base = bench.cells.get((setup, w, c)), bench.cells.get((ref, w, c))
    if cell is None or base is None or not base.med("rps"):
        return None
    return cell.med("rps") / base.med("rps")


def _table_start(title: str, head: list[str]) -> list[str]:
    return [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def _skipped_row(bench: Bench, setup: str) -> str:
    return f"| {SETUPS[setup]} | skipped: {bench.skipped[setup]} |"


def headline(bench: Bench, w: Workload, conc: list[int]) -> str:
    mid = 16 if 16 in conc else conc[len(conc) // 2]
    low = conc[0]
    head = ["in front of the upstream", *(f"req/s c{c}" for c in conc), f"p50 c{low}",
            f"CPU/req c{mid}", f"× floor c{mid}", f"× nginx c{mid}"]
    lines = _table_start(f"### {w.upper()}", head)
    for setup in bench.opts.setups:
        if setup in bench.skipped:
            lines.append(_skipped_row(bench, setup))
            continue
        cells = [bench.cells.get((setup, w, c)) for c in conc]
        if all(cell is None for cell in cells):
            continue
        first, middle = bench.cells.get((setup, w, low)), bench.cells.get((setup, w, mid))
        row = [SETUPS[setup],
               *(_f(cell.med("rps") if cell else None, ",.0f") for cell in cells),
               _f(first.med("p50_ms") if first else None, ".2f") + " ms",
               _f(middle.cpu_us() if middle else None, ".0f") + " µs",
               _f(ratio(bench, setup, FLOOR, w, mid), ".2f"),
               _f(ratio(bench, setup, NGINX_SETUP, w, mid), ".2f")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def detail(bench: Bench) -> str:
    head = ["setup", "workload", "c", "req/s", "p50 ms", "p99 ms", "CPU/req µs", "× floor",
            "× nginx", "non-2xx", "sock err"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (setup, w, c), cell in bench.cells.items():
        non2xx, sock = cell.bad()
        lines.append("| " + " | ".join([
            setup, w, str(c), f"{cell.med('rps'):,.0f}", f"{cell.med('p50_ms'):.2f}",
            f"{cell.med('p99_ms'):.2f}", _f(cell.cpu_us(), ".0f"),
            _f(ratio(bench, setup, FLOOR, w, c), ".2f"),
            _f(ratio(bench, setup, NGINX_SETUP, w, c), ".2f"), str(non2xx), str(sock),
        ]) + " |")
    return "\n".join(lines)


def scaling_table(bench: Bench, w: Workload, conc: list[int]) -> str:
    """req/s, its ratio to one worker (same run), per-core efficiency, CPU/req and worker
    balance, for each scaled setup and worker count."""
    head = ["setup", "workers", "cores"]
    for c in conc:
        head += [f"req/s c{c}", f"× 1 worker c{c}", f"per core c{c}", f"CPU/req c{c}",
                 f"balance c{c}"]
    lines = _table_start(f"### scaling, {w.upper()}", head)
    for setup in bench.opts.setups:
        if setup in bench.skipped:
            lines.append(_skipped_row(bench, setup))
            continue
        if setup not in SCALED:
            cells = [bench.cells.get((setup, w, c)) for c in conc]
            if all(cell is None for cell in cells):
                continue
            row = [SETUPS[setup], "-" if setup == "upstream" else "1",
                   bench.load_cores if setup == "upstream"
                   else core_list(bench.opts.proxy_cores[:1])]
            for cell in cells:
                row += [_f(cell.med("rps") if cell else None, ",.0f"), "", "",
                        _f(cell.cpu_us() if cell else None, ".0f") + " µs", ""]
            lines.append("| " + " | ".join(row) + " |")
            continue
        for n in bench.opts.scaling:
            cells = [bench.scaled.get((setup, n, w, c)) for c in conc]
            if all(cell is None for cell in cells):
                continue
            row = [SETUPS[setup], str(n), core_list(bench.opts.proxy_cores[:n])]
            for c, cell in zip(conc, cells, strict=True):
                base = bench.scaled.get((setup, bench.opts.scaling[0], w, c))
                rel = (cell.med("rps") / base.med("rps") * bench.opts.scaling[0]
                       if cell and base and base.med("rps") else None)
                row += [_f(cell.med("rps") if cell else None, ",.0f"), _f(rel, ".2f"),
                        _f(rel / n if rel is not None else None, ".2f"),
                        _f(cell.cpu_us() if cell else None, ".0f") + " µs",
                        _f(cell.balance() if cell else None, ".2f")]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def results_json(bench: Bench, wall_s: float) -> dict[str, object]:
    def cell_json(cell: Cell) -> dict[str, object]:
        return {
            "setup": cell.setup, "workload": cell.workload, "concurrency": cell.concurrency,
            "workers": cell.workers, "rps": cell.med("rps"), "p50_ms": cell.med("p50_ms"),
            "p99_ms": cell.med("p99_ms"), "cpu_per_req_us": cell.cpu_us(),
            "worker_balance": cell.balance(), "non_2xx": cell.bad()[0],
            "socket_errors": cell.bad()[1], "runs": [dataclasses.asdict(r) for r in cell.runs],
        }

    o = bench.opts
    return {
        "bench": "hotpath", "mode": "scaling" if o.scaling else "headline",
        "cpus": os.cpu_count(), "uname": " ".join(os.uname()), "wall_s": round(wall_s, 1),
        "python": sys.version.split()[0], "duration_s": o.duration_s, "repeats": o.repeats,
        "warmup_s": o.warmup_s, "concurrency": o.concurrency, "workloads": o.workloads,
        "setups": o.setups, "scaling": o.scaling, "workers": o.workers,
        "load_cores": o.load_cores, "proxy_cores": o.proxy_cores, "pin_workers": o.pin_workers,
        "skipped": bench.skipped, "problems": bench.problems,
        "cells": [cell_json(c) for c in bench.cells.values()],
        "scaled": [cell_json(c) for c in bench.scaled.values()],
    }


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run (3)")
    p.add_argument("--repeats", type=int, default=1, help="wrk runs per cell; median (1)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up seconds per cell (1; 0: none)")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--workload", choices=["json", "sse", "both"], default="both")
    p.add_argument("--only", default=",".join(SETUPS), help="setups: " + ",".join(SETUPS))
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="py-spy each measured run; flame graphs and summaries into DIR")
    p.add_argument("--profile-tag", default="profile", help="file name prefix (profile)")
    p.add_argument("--workers", type=int, default=1,
                   help="gateway worker processes, all on the proxy's core(s) (1): with 2 on "
                   "one core, the CPU per request shows what running two workers costs on top "
                   "of one")
    p.add_argument("--load-cores", default=UPSTREAM_CORE, metavar="LIST",
                   help=f"cores for wrk and the static upstream, taskset syntax "
                   f"({UPSTREAM_CORE})")
    p.add_argument("--proxy-cores", default=PROXY_CORE, metavar="LIST",
                   help=f"cores for the proxy under test ({PROXY_CORE}); with --scaling, N "
                   "workers get the first N, one each")
    p.add_argument("--pin-workers", action="store_true",
                   help="pin each of the --workers to a core of its own from --proxy-cores "
                   "(always on with --scaling)")
    p.add_argument("--scaling", default="", metavar="N,N,...",
                   help="scaling mode: the floor and gateway setups at each worker count "
                   "(e.g. 1,2,4,8), N workers on N dedicated proxy cores; upstream and nginx "
                   "once; prints req/s and its ratio to the first count, same run")
    p.add_argument("--pg-dsn", default=PG_DSN,
                   help=f"PostgreSQL server for gw-prod, user postgres, trust ({PG_DSN})")
    p.add_argument("--redis-url", default=REDIS_URL,
                   help=f"Redis database for gw-prod's limits ({REDIS_URL})")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", dest="json_out",
                   help="also write every cell, with the run's settings, as JSON to FILE")
    a = p.parse_args(argv)
    setups = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        p.error(f"unknown setups {unknown}; choose from {list(SETUPS)}")
    workloads: list[Workload] = list(WORKLOADS) if a.workload == "both" else [a.workload]
    try:
        load_cores, proxy_cores = parse_cores(a.load_cores), parse_cores(a.proxy_cores)
        scaling = [int(n) for n in a.scaling.split(",") if n.strip()]
    except ValueError as exc:
        p.error(str(exc))
    if set(load_cores) & set(proxy_cores):
        p.error(f"--load-cores {a.load_cores} and --proxy-cores {a.proxy_cores} overlap")
    if any(n < 1 for n in scaling) or sorted(scaling) != scaling:
        p.error("--scaling takes increasing worker counts >= 1")
    if scaling and scaling[-1] > len(proxy_cores):
        p.error(f"--scaling up to {scaling[-1]} workers needs as many --proxy-cores "
                f"(got {len(proxy_cores)}: {a.proxy_cores})")
    if a.pin_workers and a.workers > len(proxy_cores):
        p.error(f"--pin-workers with {a.workers} workers needs as many --proxy-cores")
    if scaling and a.profile is not None:
        p.error("--profile is not supported with --scaling")
    return Options(a.duration, max(1, a.repeats), a.warmup,
                   [int(c) for c in a.concurrency.split(",")], workloads,
                   [s for s in SETUPS if s in setups], a.profile, a.profile_tag, a.workers,
                   load_cores, proxy_cores, a.pin_workers, scaling, a.pg_dsn.rstrip("/"),
                   a.redis_url, a.json_out)


def main() -> int:
    opts = parse_args()
    for tool in ("taskset", WRK):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found (apt-get install -y nginx wrk util-linux)")
    if len(os.sched_getaffinity(0)) < 2:
        raise BenchError("needs at least 2 CPU cores (0 and 1)")
    missing = [c for c in opts.load_cores + opts.proxy_cores if c >= (os.cpu_count() or 1)]
    if missing:
        raise BenchError(f"cores {missing} do not exist here ({os.cpu_count()} CPUs)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hotpath-") as tmp, Processes(Path(tmp)) as procs:
        bench = Bench(opts, procs, Path(tmp))
        interrupted = False
        try:
            bench.run()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (a `timeout`): report what was measured
            interrupted = True
            bench.problems.append("interrupted: the tables hold what was measured before")
            log("interrupted; reporting what was measured")
        finally:
            procs.stop_all()
    wall = time.monotonic() - started
    load, proxy = core_list(opts.load_cores), core_list(opts.proxy_cores)
    if opts.scaling:
        print(f"\nhot path, scaling: wrk -t1 + static nginx upstream on core(s) {load}; the "
              f"floor and the gateway with {', '.join(map(str, opts.scaling))} workers, N "
              f"workers pinned one each to the first N of cores {proxy}; {opts.repeats} x "
              f"{opts.duration_s}s per cell (median), {os.cpu_count()} CPUs, {wall:.0f}s "
              f"total. × 1 worker: req/s over the {opts.scaling[0]}-worker figure of the same "
              f"run (scaled to workers); per core: that over N; balance: least / most CPU "
              f"of a worker during the run\n")
        for w in opts.workloads:
            print(scaling_table(bench, w, opts.concurrency) + "\n")
    else:
        each = " (one each)" if opts.pin_workers else ""
        print(f"\nhot path: wrk -t1 + static nginx upstream on core(s) {load}, proxy alone "
              f"on core(s) {proxy}{each} ({opts.workers} gateway worker"
              f"{'s' if opts.workers > 1 else ''}); {opts.repeats} x {opts.duration_s}s per "
              f"cell (median), {os.cpu_count()} CPUs, {wall:.0f}s total\n")
        for w in opts.workloads:
            print(headline(bench, w, opts.concurrency) + "\n")
        print(detail(bench))
    if bench.problems:
        print("\nproblems:")
        for problem in bench.problems:
            print(f"- {problem}")
    if opts.json_out is not None:
        opts.json_out.parent.mkdir(parents=True, exist_ok=True)
        opts.json_out.write_text(json.dumps(results_json(bench, wall), indent=1) + "\n")
        log(f"wrote {opts.json_out}")
    return 130 if interrupted else 1 if bench.problems else 0


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks: processes stopped, DB dropped


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    run_cli(main)
