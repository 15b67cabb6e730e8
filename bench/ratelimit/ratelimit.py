"""What does rate limiting cost? Ratios against baselines measured in the same run.

Targets (from the issue): the admission decision costs at most 1.3x a raw Redis round trip, and
the gateway's throughput with limiting on is at least 85% of limiting off. This box is shared and
noisy, so only ratios between figures taken minutes apart in one run are meaningful.

Method
------
A. In-process, against the real Redis (``--redis-url``, default 127.0.0.1:6379/0), on uvloop (the
   gateway's loop), the client pinned to core 1 (``--client-core``), with the gateway's own
   client settings (``redis.asyncio``, 1 s socket timeouts, pooled connections). Closed loops of
   1 and 16 coroutines (``--concurrency``), each awaiting one operation at a time for
   ``--micro-duration`` seconds; every operation timed with ``perf_counter_ns``:
   * ``ping``          - PING: the round-trip floor;
   * ``evalsha_raw``   - the admit Lua script by hand (no Script wrapper, no parsing): isolates
                         what the script costs over PING from what the Python side adds;
   * ``backend_admit`` - ``RedisBackend.admit(AdmitRequest)``: the decision, Lua path;
   * ``limiter_pair``  - ``AccountLimiter.admit`` then ``.settle`` (the second round trip, sent
                         after the response in the gateway), timed and reported separately.
   Limits are far above what is sent (nothing is rejected; a fallback to the in-process backend
   fails the run), 1000 account ids (``--accounts``) are cycled, and the run's keys are deleted
   after each cell. Also per cell: the client's CPU per operation (``time.process_time``) and
   Redis's own time per call (``INFO commandstats`` deltas of PING / EVALSHA).
B. The gateway (``gateway serve``, one worker, pinned to core 1) in front of the static nginx
   upstream of ``proxy_overhead.py`` (pinned to core 0), driven by wrk pinned to core 0 (2
   threads, ``--gateway-concurrency`` 16 connections, POST /v1/chat/completions with a JSON body
   and a bearer key), in three configurations started side by side (idle ones cost nothing):
   ``off`` (GATEWAY_RATELIMIT_ENABLED=false), ``inproc`` (no GATEWAY_REDIS_URL) and ``redis``.
   The account's tier has limits no run can reach: any non-2xx response or socket error fails
   the run. The gateway's Redis timeout (25 ms by default, ``--redis-timeout``) can trip when its
   core is saturated; each trip sends decisions to the in-process fallback for 1 s, so the share
   of requests that really went through Redis (EVALSHA calls / 2) is reported, warned about
   below 100% and fails the run below 95%. Also per run: the gateway's CPU per request (its
   process group's CPU time / requests), which noise disturbs far less than req/s.

Every figure is measured in ``--rounds`` rounds (configurations interleaved, order rotated each
round); tables show medians over rounds, and each ratio is the median of per-round ratios (a
ratio pairs figures taken seconds apart). ``other`` is the share of both CPUs used by processes
outside the benchmark during a wrk run (Redis counts as ours). Defaults take about 2 minutes.

    .venv/bin/python -m bench.ratelimit.ratelimit [--duration 5] [--rounds 3] [--only gateway]

JSON goes to bench/results/ratelimit.json. Exit status: 0 done, 1 a run was invalid (rejections,
errors, fallback), 2 set-up failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvloop

from bench.proxy import overhead_cpu as cpu
from bench.proxy.overhead_gateway import prepare
from bench.proxy.overhead_payloads import request_body
from bench.proxy.overhead_servers import (
    RESULTS_DIR,
    BenchError,
    Managed,
    Processes,
    http_request,
    log,
    run_cli,
    start_upstream,
)
from bench.ratelimit.ratelimit_support import (
    Cell,
    Steps,
    WrkRun,
    connect,
    evalsha_calls,
    gateway_env,
    group_cpu_s,
    measure_cell,
    parse_cpu_us,
    readyz_mode,
    run_wrk,
    scrape,
    start_gateway,
)

DECISION_TARGET = 1.3
THROUGHPUT_TARGET = 0.85
MIN_REDIS_SHARE = 0.95
OPS = ("ping", "evalsha_raw", "backend_admit", "limiter_pair")
CONFIGS = {"off": "limiting off", "inproc": "in-process backend", "redis": "Redis backend"}
EXPECTED_MODE = {"off": "none", "inproc": "in_process", "redis": "redis"}
DEFAULT_OUTPUT = RESULTS_DIR / "ratelimit.json"
Row = tuple[str, str]  # (op, phase)
ROWS: tuple[tuple[str, Row], ...] = (
    ("PING", ("ping", "op")), ("EVALSHA admit, raw", ("evalsha_raw", "op")),
    ("RedisBackend.admit", ("backend_admit", "op")),
    ("AccountLimiter.admit", ("limiter_pair", "admit")),
    ("AccountLimiter.settle", ("limiter_pair", "settle")),
)


@dataclass(frozen=True)
class Options:
    duration_s: float
    micro_duration_s: float
    rounds: int
    concurrency: list[int]
    gateway_concurrency: int
    accounts: int
    redis_url: str
    redis_timeout_s: float | None
    client_core: int
    parts: list[str]
    output: Path


@dataclass
class GatewayRun:
    config: str
    round: int
    wrk: WrkRun
    other_cpu: float
    decisions: float
    decision_mean_us: float | None
    backend_errors: float
    gateway_cpu_us: float  # per request
    redis_cpu_us: float | None  # per request
    redis_share: float | None  # of requests admitted and settled through Redis (EVALSHA / 2)


@dataclass
class Outcome:
    cells: list[Cell] = field(default_factory=list)
    parse_cpu_us: float = 0.0
    gateway: list[GatewayRun] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def rotated(items: list[str] | tuple[str, ...], by: int) -> list[str]:
    by %= len(items)
    return [*items[by:], *items[:by]]


# ----------------------------------------------------------------------------- part A


@contextmanager
def pinned(core: int) -> Iterator[None]:
    """Pin this process to one core for the in-process part (no-op for a negative core)."""
    before = os.sched_getaffinity(0)
    if core >= 0:
        os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


async def micro(opts: Options, outcome: Outcome) -> None:
    redis = connect(opts.redis_url)
    steps = Steps(redis, [f"acct-{n:05d}" for n in range(opts.accounts)],
                  prefix=f"gw:rlbench:{os.getpid()}")
    try:
        await steps.load()
        for op in OPS:  # warm-up: script cache, connection pool, code paths
            await measure_cell(steps, op, max(opts.concurrency), 0.3)
        for rnd in range(opts.rounds):
            for concurrency in opts.concurrency:
                for op in rotated(OPS, rnd):
                    cell = await measure_cell(steps, op, concurrency, opts.micro_duration_s)
                    outcome.cells.append(cell)
                    log_cell(rnd, cell)
                    if cell.fallbacks:
                        outcome.warnings.append(f"{op}/c{concurrency}: {cell.fallbacks} "
                                                "decisions fell back to the in-process backend")
    finally:
        await steps.clear()
        await redis.aclose()


def log_cell(rnd: int, cell: Cell) -> None:
    phase = next(iter(cell.phases))
    log(f"  round {rnd + 1} {cell.op:<14} c{cell.concurrency:<3} {cell.rate():>9,.0f} ops/s  "
        f"p50 {cell.pct_us(phase, 0.5):7.1f} us  p99 {cell.pct_us(phase, 0.99):7.1f} us  "
        f"cpu {cell.cpu_us_per_op():6.1f} us/op")


def run_micro(opts: Options, outcome: Outcome) -> None:
    log(f"A. in-process: {', '.join(OPS)} x c{opts.concurrency} x {opts.rounds} rounds")
    with pinned(opts.client_core), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(micro(opts, outcome))
        outcome.parse_cpu_us = parse_cpu_us()


def cells_for(outcome: Outcome, op: str, concurrency: int) -> list[Cell]:
    return [c for c in outcome.cells if c.op == op and c.concurrency == concurrency]


def micro_summary(outcome: Outcome, row: Row, concurrency: int) -> dict[str, float | None]:
    op, phase = row
    cells = cells_for(outcome, op, concurrency)
    servers = [c.server_us_per_call for c in cells if c.server_us_per_call is not None]
    return {
        "ops_per_s": median([c.rate() for c in cells]),
        "p50_us": median([c.pct_us(phase, 0.5) for c in cells]),
        "p99_us": median([c.pct_us(phase, 0.99) for c in cells]),
        "client_cpu_us_per_op": median([c.cpu_us_per_op() for c in cells]),
        "server_us_per_call": median(servers),
    }


def paired_ratio(outcome: Outcome, row: Row, concurrency: int,
                 metric: Callable[[Cell, str], float]) -> float | None:
    """Median over rounds of metric(row) / metric(PING) in the same round."""
    ours = cells_for(outcome, row[0], concurrency)
    pings = cells_for(outcome, "ping", concurrency)
    ratios = [metric(a, row[1]) / metric(p, "op")
              for a, p in zip(ours, pings, strict=False) if metric(p, "op")]
    return median(ratios)


MICRO_RATIOS: dict[str, Callable[[Cell, str], float]] = {
    "p50": lambda c, ph: c.pct_us(ph, 0.5),
    "p99": lambda c, ph: c.pct_us(ph, 0.99),
    "ops": lambda c, _ph: c.rate(),
}


def micro_ratios(outcome: Outcome, concurrency: list[int]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for label, row in ROWS[1:]:
        for c in concurrency:
            out.setdefault(label, {})[f"c{c}"] = {
                name: paired_ratio(outcome, row, c, fn) for name, fn in MICRO_RATIOS.items()
            }
    return out


# ----------------------------------------------------------------------------- part B


class GatewayBench:
    def __init__(self, opts: Options, procs: Processes, work_dir: Path, outcome: Outcome) -> None:
        self.opts, self.procs, self.work_dir, self.outcome = opts, procs, work_dir, outcome
        self.body = work_dir / "request.json"
        self.body.write_bytes(request_body("json"))
        self.urls: dict[str, str] = {}
        self.pgids: dict[str, int] = {}
        self.key = ""
        self.redis_pgid = redis_pgid(opts.redis_url)

    def run(self) -> None:
        log("B. gateway: starting static nginx upstream (core 0) and the gateway set-up")
        upstream = start_upstream(self.procs)
        setup = prepare(self.work_dir / "setup", upstream.base_url("json"), 1)
        self.key = setup.api_key
        for config in CONFIGS:
            env = gateway_env(setup, config, self.opts.redis_url, self.work_dir,
                              self.opts.redis_timeout_s)
            managed, self.urls[config] = start_gateway(self.procs, config, env)
            self.pgids[config] = managed.proc.pid
            self.check_ready(config, managed)
        for rnd in range(self.opts.rounds):
            for config in rotated(list(CONFIGS), rnd):
                self.measure(config, rnd)

    def check_ready(self, config: str, managed: Managed) -> None:
        url = self.urls[config]
        status, _, body = http_request(
            f"{url}/v1/chat/completions", request_body("json"),
            {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
        if status != 200:
            raise BenchError(f"{config}: preflight answered {status}: {body[:300]!r}")
        mode = readyz_mode(url)
        if mode != EXPECTED_MODE[config]:
            raise BenchError(f"{config}: /readyz says ratelimit={mode}, "
                             f"expected {EXPECTED_MODE[config]} (log: {managed.log})")
        self.wrk(config, 1.0)  # warm-up
        log(f"  {config:<7} up at {url} (ratelimit mode {mode}), warmed up")

    def wrk(self, config: str, duration_s: float) -> WrkRun:
        run = run_wrk(self.urls[config], self.opts.gateway_concurrency, duration_s, self.body,
                      self.key)
        if run.non_2xx or run.socket_errors:
            self.outcome.failures.append(
                f"gateway {config}: {run.non_2xx} non-2xx, {run.socket_errors} socket errors")
        return run

    def measure(self, config: str, rnd: int) -> None:
        url = self.urls[config]
        pgids = self.procs.pgids() | ({self.redis_pgid} if self.redis_pgid else set())
        before, used0, sha0 = scrape(url), self.cpu_used(config), evalsha_calls(self.opts.redis_url)
        cpu0, t0 = cpu.snapshot(pgids), time.monotonic()
        run = self.wrk(config, self.opts.duration_s)
        other = cpu.foreign_share(cpu0, cpu.snapshot(pgids), time.monotonic() - t0)
        after, used1 = scrape(url), self.cpu_used(config)
        share = (evalsha_calls(self.opts.redis_url) - sha0) / (2 * max(run.requests, 1))
        delta = {k: after[k] - before[k] for k in after}
        mean = (delta["decision_s_sum"] / delta["decision_count"] * 1e6
                if delta["decision_count"] else None)
        per_req = [(b - a) * 1e6 / max(run.requests, 1) for a, b in zip(used0, used1, strict=True)]
        result = GatewayRun(config, rnd, run, other, delta["decisions"], mean,
                            delta["backend_errors"], per_req[0],
                            per_req[1] if self.redis_pgid else None,
                            share if config == "redis" else None)
        self.outcome.gateway.append(result)
        self.check_run(result, after)
        log(f"  round {rnd + 1} {config:<7} {run.rps:>8,.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
            f"p99 {run.p99_ms:6.2f} ms  non-2xx {run.non_2xx}  gateway CPU "
            f"{result.gateway_cpu_us:.0f} us/req  other CPU {other:.0%}")

    def cpu_used(self, config: str) -> tuple[float, float]:
        """CPU seconds so far of this configuration's gateway and of Redis."""
        redis = group_cpu_s(self.redis_pgid) if self.redis_pgid else 0.0
        return group_cpu_s(self.pgids[config]), redis

    def check_run(self, result: GatewayRun, after: dict[str, float]) -> None:
        if result.config == "off":
            return
        where = f"gateway {result.config} round {result.round + 1}"
        if result.backend_errors or after["fallback_active"]:
            self.outcome.warnings.append(
                f"{where}: {result.backend_errors:.0f} Redis timeouts/errors (then 1 s on the "
                f"in-process fallback each); ~{result.redis_share or 0:.1%} of requests via Redis")
        if result.redis_share is not None and result.redis_share < MIN_REDIS_SHARE:
            self.outcome.failures.append(
                f"{where}: only ~{result.redis_share:.1%} of requests went through Redis (the "
                "rest through the fallback): not a Redis measurement; try --redis-timeout 1")
        if result.decisions < result.wrk.requests:
            self.outcome.failures.append(
                f"gateway {result.config}: {result.decisions:.0f} decisions for "
                f"{result.wrk.requests} requests")


def redis_pgid(url: str) -> int | None:
    """Redis's process group, so that its CPU counts as the benchmark's own."""
    async def pid() -> int:
        client = connect(url)
        try:
            info: dict[str, Any] = await client.info("server")
            return int(info["process_id"])
        finally:
            await client.aclose()

    try:
        return os.getpgid(asyncio.run(pid()))
    except (OSError, KeyError, ValueError):
        return None


def gateway_summary(outcome: Outcome, config: str) -> dict[str, float | None]:
    runs = [r for r in outcome.gateway if r.config == config]
    means = [r.decision_mean_us for r in runs if r.decision_mean_us is not None]
    return {
        "rps": median([r.wrk.rps for r in runs]),
        "p50_ms": median([r.wrk.p50_ms for r in runs]),
        "p99_ms": median([r.wrk.p99_ms for r in runs]),
        "non_2xx": sum(r.wrk.non_2xx for r in runs),
        "decision_mean_us": median(means),
        "redis_share_min": min((r.redis_share for r in runs if r.redis_share is not None),
                               default=None),
        "gateway_cpu_us_per_req": median([r.gateway_cpu_us for r in runs]),
        "redis_cpu_us_per_req": median([r.redis_cpu_us for r in runs
                                        if r.redis_cpu_us is not None]),
        "other_cpu_max": max((r.other_cpu for r in runs), default=None),
    }


def gateway_ratio(outcome: Outcome, config: str, base: str, by_cpu: bool = False
                  ) -> float | None:
    """Median per-round req/s ratio config/base; with ``by_cpu`` the throughput implied by the
    gateway's CPU per request (base us/req over config us/req), which noise disturbs less."""
    def value(r: GatewayRun) -> float:
        return 1 / r.gateway_cpu_us if by_cpu and r.gateway_cpu_us else r.wrk.rps

    by_round = {(r.config, r.round): value(r) for r in outcome.gateway}
    rounds = {r.round for r in outcome.gateway}
    ratios = [by_round[(config, n)] / by_round[(base, n)] for n in sorted(rounds)
              if (config, n) in by_round and by_round.get((base, n))]
    return median(ratios)


# ----------------------------------------------------------------------------- output


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def verdict(value: float | None, target: float, at_most: bool) -> str:
    if value is None:
        return ""
    ok = value <= target if at_most else value >= target
    return "PASS" if ok else "MISS"


def micro_table(outcome: Outcome, concurrency: list[int]) -> str:
    header = (f"{'operation':<24}{'conc':>5}{'ops/s':>10}{'p50 us':>9}{'p99 us':>9}"
              f"{'client CPU us/op':>18}{'Redis us/call':>15}")
    lines = ["A. In-process, against Redis (medians over rounds)", header, "-" * len(header)]
    for c in concurrency:
        for label, row in ROWS:
            s = micro_summary(outcome, row, c)
            rate = "(pair)" if row[1] == "settle" else fmt(s["ops_per_s"], ",.0f")
            lines.append(f"{label:<24}{c:>5}{rate:>10}{fmt(s['p50_us'], '.1f'):>9}"
                         f"{fmt(s['p99_us'], '.1f'):>9}"
                         f"{fmt(s['client_cpu_us_per_op'], '.1f'):>18}"
                         f"{fmt(s['server_us_per_call'], '.1f'):>15}")
    lines.append(f"(client CPU per op counts the whole limiter pair on its admit row; "
                 f"parse + decide() alone: {outcome.parse_cpu_us:.1f} us)")
    return "\n".join(lines)


def micro_ratio_table(ratios: dict[str, dict[str, Any]], concurrency: list[int]) -> str:
    header = f"{'vs PING (same round)':<24}{'conc':>5}{'p50 x':>8}{'p99 x':>8}{'ops/s x':>9}"
    lines = [f"{header}   target: latency <= {DECISION_TARGET}x", "-" * (len(header) + 30)]
    for label, by_c in ratios.items():
        for c in concurrency:
            r = by_c[f"c{c}"]
            judged = label in ("RedisBackend.admit", "AccountLimiter.admit")
            marks = (f"  p50 {verdict(r['p50'], DECISION_TARGET, True)}, "
                     f"p99 {verdict(r['p99'], DECISION_TARGET, True)}") if judged else ""
            lines.append(f"{label:<24}{c:>5}{fmt(r['p50'], '.2f'):>8}{fmt(r['p99'], '.2f'):>8}"
                         f"{fmt(r['ops'], '.2f'):>9}{marks}")
    return "\n".join(lines)


def gateway_table(outcome: Outcome, opts: Options) -> str:
    header = (f"{'gateway, c' + str(opts.gateway_concurrency):<24}{'req/s':>9}{'p50 ms':>8}"
              f"{'p99 ms':>8}{'non-2xx':>8}{'decision us':>12}{'gw CPU us/req':>14}"
              f"{'Redis CPU us/req':>17}{'other':>7}{'x off':>7}{'CPU x off':>10}")
    lines = [f"B. Gateway under wrk (medians of {opts.rounds} x {opts.duration_s:g} s)", header,
             "-" * len(header)]
    for config, label in CONFIGS.items():
        s = gateway_summary(outcome, config)
        ratio = gateway_ratio(outcome, config, "off")
        by_cpu = gateway_ratio(outcome, config, "off", by_cpu=True)
        lines.append(f"{label:<24}{fmt(s['rps'], ',.0f'):>9}{fmt(s['p50_ms'], '.2f'):>8}"
                     f"{fmt(s['p99_ms'], '.2f'):>8}{fmt(s['non_2xx'], '.0f'):>8}"
                     f"{fmt(s['decision_mean_us'], '.0f'):>12}"
                     f"{fmt(s['gateway_cpu_us_per_req'], '.0f'):>14}"
                     f"{fmt(s['redis_cpu_us_per_req'], '.1f'):>17}"
                     f"{fmt(s['other_cpu_max'], '.0%'):>7}{fmt(ratio, '.3f'):>7}"
                     f"{fmt(by_cpu, '.3f'):>10}")
    lines.append("(decision us: the gateway's mean admit time from /metrics; Redis CPU: all of "
                 "redis-server's, idle-ish but shared; CPU x off: off's gateway CPU/req over "
                 "this one's)")
    share = gateway_summary(outcome, "redis")["redis_share_min"]
    lines.append(f"(Redis config: at least {fmt(share, '.1%')} of requests per round were "
                 "admitted and settled through Redis, from EVALSHA counts)")
    return "\n".join(lines)


def targets(outcome: Outcome, ratios: dict[str, dict[str, Any]], opts: Options) -> list[str]:
    lines = ["Targets"]
    for label in ("RedisBackend.admit", "AccountLimiter.admit"):
        for c in opts.concurrency:
            r = ratios.get(label, {}).get(f"c{c}", {})
            if r.get("p50") is not None:
                lines.append(f"  decision ({label}, c{c}) p50 {r['p50']:.2f}x / p99 "
                             f"{fmt(r['p99'], '.2f')}x PING (<= {DECISION_TARGET}x): "
                             f"{verdict(r['p50'], DECISION_TARGET, True)} / "
                             f"{verdict(r['p99'], DECISION_TARGET, True)}")
    for config in ("redis", "inproc"):
        ratio = gateway_ratio(outcome, config, "off")
        by_cpu = gateway_ratio(outcome, config, "off", by_cpu=True)
        if ratio is not None:
            lines.append(f"  throughput {config} / off: {ratio:.3f} (>= {THROUGHPUT_TARGET}): "
                         f"{verdict(ratio, THROUGHPUT_TARGET, False)}   [by gateway CPU/req: "
                         f"{fmt(by_cpu, '.3f')} {verdict(by_cpu, THROUGHPUT_TARGET, False)}]")
    return lines


def write_json(opts: Options, outcome: Outcome, ratios: dict[str, dict[str, Any]],
               started: float) -> None:
    micro_doc = {f"{label} c{c}": micro_summary(outcome, row, c)
                 for c in opts.concurrency for label, row in ROWS}
    doc = {
        "meta": {"started_unix": round(started), "wall_s": round(time.time() - started, 1),
                 "host": platform.node(), "python": platform.python_version(),
                 "options": {**asdict(opts), "output": str(opts.output)},
                 "targets": {"decision_vs_ping_max": DECISION_TARGET,
                             "throughput_on_vs_off_min": THROUGHPUT_TARGET}},
        "micro": micro_doc, "micro_ratios_vs_ping": ratios,
        "parse_decide_cpu_us": round(outcome.parse_cpu_us, 2),
        "gateway": {c: gateway_summary(outcome, c) for c in CONFIGS},
        "gateway_ratios": {f"{c}_vs_off": gateway_ratio(outcome, c, "off")
                           for c in ("inproc", "redis")},
        "gateway_ratios_by_cpu_per_request": {f"{c}_vs_off": gateway_ratio(outcome, c, "off", True)
                                              for c in ("inproc", "redis")},
        "gateway_runs": [{**asdict(r), "wrk": asdict(r.wrk)} for r in outcome.gateway],
        "failures": outcome.failures,
        "warnings": outcome.warnings,
    }
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(doc, indent=2) + "\n")


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5, help="seconds per wrk run (5)")
    p.add_argument("--micro-duration", type=float, default=2,
                   help="seconds per in-process cell (2)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians (3)")
    p.add_argument("--concurrency", default="1,16", help="in-process coroutines (1,16)")
    p.add_argument("--gateway-concurrency", type=int, default=16, help="wrk connections (16)")
    p.add_argument("--accounts", type=int, default=1000, help="account ids cycled (1000)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--redis-timeout", type=float, default=None,
                   help="GATEWAY_RATELIMIT_REDIS_TIMEOUT_S for the gateways (gateway default)")
    p.add_argument("--client-core", type=int, default=1,
                   help="core for the in-process client, -1 to leave unpinned (1)")
    p.add_argument("--only", default="micro,gateway", help="parts: micro,gateway")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    a = p.parse_args(argv)
    parts = [x for x in ("micro", "gateway") if x in a.only.split(",")]
    concurrency = [int(c) for c in a.concurrency.split(",")]
    if a.rounds < 1 or a.duration < 1 or a.micro_duration <= 0 or min(concurrency) < 1:
        p.error("--rounds, --duration (>= 1 s), --micro-duration, --concurrency must be positive")
    if not parts:
        p.error("--only: choose micro and/or gateway")
    return Options(a.duration, a.micro_duration, a.rounds, concurrency, a.gateway_concurrency,
                   a.accounts, a.redis_url, a.redis_timeout, a.client_core, parts, a.output)


@contextmanager
def signals_as_exit() -> Iterator[None]:
    """SIGTERM/SIGHUP raise SystemExit and SIGINT KeyboardInterrupt, so clean-up always runs."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    new: dict[signal.Signals, Any] = {signal.SIGINT: signal.default_int_handler,
                                      signal.SIGTERM: handler, signal.SIGHUP: handler}
    previous = {sig: signal.signal(sig, h) for sig, h in new.items()}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def report(opts: Options, outcome: Outcome, started: float) -> None:
    ratios = micro_ratios(outcome, opts.concurrency)
    write_json(opts, outcome, ratios, started)
    print()
    if "micro" in opts.parts:
        print(micro_table(outcome, opts.concurrency), end="\n\n")
        print(micro_ratio_table(ratios, opts.concurrency), end="\n\n")
    if "gateway" in opts.parts:
        print(gateway_table(outcome, opts), end="\n\n")
    print("\n".join(targets(outcome, ratios, opts)))
    for warning in outcome.warnings:
        print(f"WARNING {warning}")
    for failure in outcome.failures:
        print(f"FAILED {failure}")
    print(f"results: {opts.output}  ({time.time() - started:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    started, outcome = time.time(), Outcome()
    with signals_as_exit():
        if "micro" in opts.parts:
            run_micro(opts, outcome)
        if "gateway" in opts.parts:
            with tempfile.TemporaryDirectory(prefix="ratelimit-bench-") as tmp, \
                    Processes(Path(tmp)) as procs:
                GatewayBench(opts, procs, Path(tmp), outcome).run()
    report(opts, outcome, started)
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    run_cli(main)
