"""What does a proxy in front of an LLM server cost? wrk against five configurations, in one run.

Method
------
* Upstream: a static nginx (``worker_processes 1``, own config/pid/logs in a temp dir, ``daemon
  off``) pinned to core 0 with ``taskset -c 0``. It answers POST /v1/chat/completions with
  either (i) a ~600-byte JSON chat completion with ``usage`` or (ii) an SSE stream of 20
  ``chat.completion.chunk`` events ending in a usage chunk and ``data: [DONE]``; one port per
  workload, bodies inline in ``return 200 '...'`` (nginx answers POST to static files with 405).
* The proxy under test is one process pinned to core 1 (``taskset -c 1``):
  (a) ``upstream`` - none, wrk talks to the static nginx directly (the baseline);
  (b) ``nginx``    - a second nginx, reverse proxy with a keepalive upstream pool;
  (c) ``aiohttp``  - minimal FastAPI + one pooled aiohttp ClientSession (passthrough_aiohttp.py);
  (d) ``httpx``    - minimal FastAPI + one pooled httpx.AsyncClient (passthrough_httpx.py);
  (e) ``gateway``  - our gateway (``gateway serve``) with auth, request logging and metrics on.
  Python ones run under uvicorn: one worker, ``--loop uvloop --http httptools``, log level
  warning, no access log. ``--gateway-workers 2`` runs (e) with two workers on both cores
  (a scale-out figure: it then shares core 0 with the upstream).
* Load: wrk (unpinned) with bench/wrk/post_chat.lua - POST, JSON body, ``Content-Type`` and
  ``Authorization: Bearer <key>`` - at concurrency 1, 16 and 64 (1 thread at c1, 2 otherwise;
  connections = concurrency), after a warm-up run at the same concurrency. Every config is
  first checked with one real request (status 200, content type, body; byte-exact for a-d).
* Reported per config/workload/concurrency: req/s, p50/p99 latency (wrk's histogram, printed
  as JSON by the Lua ``done()``), non-2xx responses and socket errors (must be 0: the run exits
  1 otherwise). With ``--repeats N`` each figure is the median of N runs. Derived: latency
  added over the upstream alone at the same concurrency, and req/s relative to the minimal
  aiohttp pass-through (the floor for a Python proxy) and to nginx.

Defaults (5 s runs, 1 s warm-up, 1 repeat) take about 3-4 minutes; ``--duration 15 --repeats 3``
reproduces the spec's method. Results go to bench/results/proxy_overhead.json.

    .venv/bin/python -m bench.proxy.proxy_overhead [--only nginx,aiohttp] [--workload json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, cast

from bench.proxy import overhead_cpu as cpu
from bench.proxy import overhead_gateway as gateway
from bench.proxy.overhead_payloads import WORKLOADS, Workload, check_response, request_body
from bench.proxy.overhead_servers import (
    NGINX,
    RESULTS_DIR,
    BenchError,
    Managed,
    Processes,
    Upstream,
    http_request,
    log,
    run_cli,
    start_nginx_proxy,
    start_passthrough,
    start_upstream,
)
from bench.proxy.overhead_wrk import WRK, WrkRun, run_wrk

CONFIGS: dict[str, str] = {
    "upstream": "upstream alone (wrk -> static nginx)",
    "nginx": "nginx reverse proxy",
    "aiohttp": "minimal FastAPI + aiohttp pass-through",
    "httpx": "minimal FastAPI + httpx pass-through",
    "gateway": "our gateway (auth, request log, metrics)",
}
FLOOR = "aiohttp"
DEFAULT_OUTPUT = RESULTS_DIR / "proxy_overhead.json"


@dataclass(frozen=True)
class Options:
    duration_s: int
    repeats: int
    warmup_s: int
    concurrency: list[int]
    workloads: list[Workload]
    configs: list[str]
    gateway_workers: int
    output: Path
    max_foreign_cpu: float
    noise_retries: int


@dataclass
class Measurement:
    config: str
    workload: Workload
    concurrency: int
    runs: list[WrkRun]
    foreign_cpu: list[float]
    derived: dict[str, float | None] = field(default_factory=dict)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(run, attr) for run in self.runs))

    def errors(self) -> int:
        return sum(run.non_2xx + run.socket_errors for run in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config, "workload": self.workload, "concurrency": self.concurrency,
            "rps": round(self.median("rps"), 1),
            "p50_ms": round(self.median("p50_ms"), 3),
            "p90_ms": round(self.median("p90_ms"), 3),
            "p99_ms": round(self.median("p99_ms"), 3),
            "non_2xx": sum(run.non_2xx for run in self.runs),
            "socket_errors": sum(run.socket_errors for run in self.runs),
            "foreign_cpu_share": round(max(self.foreign_cpu), 3),
            **{k: None if v is None else round(v, 3) for k, v in self.derived.items()},
            "runs": [run.as_dict() for run in self.runs],
        }


@dataclass
class Outcome:
    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    gateway_log: dict[str, dict[str, int | None]] = field(default_factory=dict)


def config_label(config: str, gateway_workers: int) -> str:
    if config == "gateway" and gateway_workers > 1:
        return f"our gateway, {gateway_workers} workers, cores 0-1 (scale-out)"
    return CONFIGS[config]


class Bench:
    """Starts the upstream once, then each proxy per workload, and measures it with wrk."""

    def __init__(self, opts: Options, procs: Processes, work_dir: Path) -> None:
        self.opts = opts
        self.procs = procs
        self.work_dir = work_dir
        self.outcome = Outcome()
        self.api_key = "bench-passthrough-key"
        self.gateway_setup: gateway.GatewaySetup | None = None
        self.upstream: Upstream | None = None
        self.sent = 0  # requests answered by the config being measured, warm-ups included
        self.current = ""  # "config/workload" being measured, for messages
        self.logged_before = (0, 0)
        self.bodies = {w: self._write_body(w) for w in WORKLOADS}

    def _write_body(self, workload: Workload) -> Path:
        path = self.work_dir / f"request-{workload}.json"
        path.write_bytes(request_body(workload))
        return path

    def run(self) -> Outcome:
        log("starting static nginx upstream on core 0")
        self.upstream = start_upstream(self.procs)
        if "gateway" in self.opts.configs:
            self._prepare_gateway()
        for workload in self.opts.workloads:
            for config in self.opts.configs:
                if config not in self.outcome.skipped:
                    self._measure_config(config, workload)
        return self.outcome

    def _prepare_gateway(self) -> None:
        reason = gateway.unavailable_reason()
        if reason is None:
            assert self.upstream is not None
            try:
                self.gateway_setup = gateway.prepare(
                    self.work_dir / "gateway", self.upstream.base_url("json"),
                    self.opts.gateway_workers,
                )
            except BenchError as exc:
                reason = f"gateway set-up failed: {exc}"
        if reason is not None:
            self.outcome.skipped["gateway"] = reason
            log(f"SKIP (e) gateway: {reason}")

    def _launch(self, config: str, workload: Workload) -> tuple[Managed | None, str]:
        assert self.upstream is not None
        upstream_url = self.upstream.base_url(workload)
        if config == "upstream":
            return None, upstream_url
        if config == "nginx":
            return start_nginx_proxy(self.procs, upstream_url, workload)
        if config == "gateway":
            assert self.gateway_setup is not None
            return gateway.start(self.procs, self.gateway_setup, upstream_url, workload)
        return start_passthrough(self.procs, f"passthrough_{config}", upstream_url, workload)

    def _key_for(self, config: str) -> str:
        if config == "gateway" and self.gateway_setup is not None:
            return self.gateway_setup.api_key
        return self.api_key

    def _measure_config(self, config: str, workload: Workload) -> None:
        log(f"[{workload}] {config_label(config, self.opts.gateway_workers)}")
        managed: Managed | None = None
        self.sent, self.current = 0, f"{config}/{workload}"
        try:
            managed, url = self._launch(config, workload)
            self._preflight(config, workload, url)
            for concurrency in self.opts.concurrency:
                self._measure(config, workload, url, concurrency)
            if config == "gateway":
                self._check_gateway_log(workload, url, managed)
                managed = None
        except BenchError as exc:
            self.outcome.failures.append(f"{config}/{workload}: {exc}")
            log(f"FAIL {config} [{workload}]: {exc}")
        finally:
            if managed is not None:
                self.procs.stop(managed, grace_s=40.0)

    def _check_gateway_log(self, workload: Workload, url: str, managed: Managed | None) -> None:
        """Requests the gateway counted in /metrics and recorded (DB + spill) vs wrk's count."""
        assert self.gateway_setup is not None and managed is not None
        counted = gateway.requests_2xx(url)
        self.procs.stop(managed, grace_s=40.0)  # graceful: the writer flushes its queue
        rows, spilled = gateway.logged_records(self.gateway_setup)
        before, self.logged_before = self.logged_before, (rows, spilled)
        check: dict[str, int | None] = {
            "answered": self.sent, "metrics_2xx": counted,
            "db_records": rows - before[0], "spilled_records": spilled - before[1],
        }
        self.outcome.gateway_log[workload] = check
        log(f"    gateway log check: {check}")
        recorded = (rows - before[0]) + (spilled - before[1])
        if recorded < self.sent:
            log(f"WARNING gateway recorded {recorded} requests of {self.sent} answered")

    def _preflight(self, config: str, workload: Workload, url: str) -> None:
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {self._key_for(config)}"}
        status, content_type, body = http_request(
            f"{url}/v1/chat/completions", request_body(workload), headers
        )
        self.sent += 1
        problem = check_response(workload, status, content_type, body, exact=config != "gateway")
        if problem is not None:
            raise BenchError(f"{config}/{workload} preflight: {problem}")

    def _metered_run(
        self, url: str, concurrency: int, body: Path, key: str
    ) -> tuple[WrkRun, float]:
        """One wrk run, and the CPU share that processes outside the benchmark took meanwhile."""
        before, started = cpu.snapshot(self.procs.pgids()), time.monotonic()
        run = self._wrk(url, concurrency, self.opts.duration_s, body, key)
        after = cpu.snapshot(self.procs.pgids())
        return run, cpu.foreign_share(before, after, time.monotonic() - started)

    def _wrk(self, url: str, concurrency: int, duration_s: int, body: Path, key: str) -> WrkRun:
        """One wrk run; any non-2xx response or socket error (warm-ups too) is a failure."""
        run = run_wrk(url, concurrency, duration_s, body, key)
        self.sent += run.requests
        if run.non_2xx or run.socket_errors:
            failure = (f"{self.current}/c{concurrency}: {run.non_2xx} non-2xx responses, "
                       f"{run.socket_errors} socket errors")
            self.outcome.failures.append(failure)
            log(f"ERROR {failure}")
        return run

    def _quiet_run(
        self, url: str, concurrency: int, body: Path, key: str
    ) -> tuple[WrkRun, float]:
        """A metered run, rerun (up to --noise-retries) while other processes take too much CPU;
        the least disturbed attempt is kept."""
        attempts = [self._metered_run(url, concurrency, body, key)]
        while attempts[-1][1] > self.opts.max_foreign_cpu and len(attempts) <= \
                self.opts.noise_retries:
            log(f"    c{concurrency}: other processes took {attempts[-1][1]:.0%} of the CPUs, "
                "measuring again")
            attempts.append(self._metered_run(url, concurrency, body, key))
        return min(attempts, key=lambda attempt: attempt[1])

    def _measure(self, config: str, workload: Workload, url: str, concurrency: int) -> None:
        key, body = self._key_for(config), self.bodies[workload]
        if self.opts.warmup_s > 0:
            self._wrk(url, concurrency, self.opts.warmup_s, body, key)
        metered = [self._quiet_run(url, concurrency, body, key)
                   for _ in range(self.opts.repeats)]
        runs = [run for run, _ in metered]
        measurement = Measurement(config, workload, concurrency, runs, [f for _, f in metered])
        self.outcome.measurements.append(measurement)
        m = measurement
        log(f"    c{concurrency:<3} {m.median('rps'):>9,.0f} req/s  p50 {m.median('p50_ms'):7.2f}"
            f" ms  p99 {m.median('p99_ms'):7.2f} ms  errors {m.errors()}"
            f"  other CPU {max(m.foreign_cpu):.0%}")


def add_derived(measurements: list[Measurement]) -> None:
    """Latency added over the upstream alone; req/s relative to the aiohttp floor and nginx."""
    index = {(m.config, m.workload, m.concurrency): m for m in measurements}
    for m in measurements:
        def ref(config: str, m: Measurement = m) -> Measurement | None:
            return index.get((config, m.workload, m.concurrency))

        base, floor, nginx = ref("upstream"), ref(FLOOR), ref("nginx")
        m.derived = {
            "added_p50_ms": _diff(m, base, "p50_ms"),
            "added_p99_ms": _diff(m, base, "p99_ms"),
            "rps_vs_aiohttp": _ratio(m, floor),
            "rps_vs_nginx": _ratio(m, nginx),
            "added_p50_vs_aiohttp": _added_ratio(m, floor, base),
        }


def _diff(m: Measurement, ref: Measurement | None, attr: str) -> float | None:
    return None if ref is None else m.median(attr) - ref.median(attr)


def _ratio(m: Measurement, ref: Measurement | None) -> float | None:
    return None if ref is None or not ref.median("rps") else m.median("rps") / ref.median("rps")


def _added_ratio(
    m: Measurement, floor: Measurement | None, base: Measurement | None
) -> float | None:
    if floor is None or base is None:
        return None
    floor_added = floor.median("p50_ms") - base.median("p50_ms")
    return None if floor_added <= 0 else (m.median("p50_ms") - base.median("p50_ms")) / floor_added


def _fmt(value: float | None, spec: str, signed: bool = False) -> str:
    if value is None:
        return "-"
    return format(value, ("+" if signed else "") + spec)


def detail_table(measurements: list[Measurement], workload: Workload, workers: int) -> str:
    header = (f"{'config':<46}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}"
              f"{'+p99 ms':>9}{'x aiohttp':>10}{'x nginx':>9}{'errors':>8}{'other':>7}")
    lines = [f"== workload: {workload} ==", header, "-" * len(header)]
    for m in (m for m in measurements if m.workload == workload):
        d = m.derived
        lines.append(
            f"{config_label(m.config, workers):<46.46}{m.concurrency:>5}{m.median('rps'):>10,.0f}"
            f"{m.median('p50_ms'):>9.2f}{m.median('p99_ms'):>9.2f}"
            f"{_fmt(d.get('added_p50_ms'), '.2f', True):>9}"
            f"{_fmt(d.get('added_p99_ms'), '.2f', True):>9}"
            f"{_fmt(d.get('rps_vs_aiohttp'), '.2f'):>10}{_fmt(d.get('rps_vs_nginx'), '.3f'):>9}"
            f"{m.errors():>8}{max(m.foreign_cpu):>7.0%}"
        )
    return "\n".join(lines)


def summary_table(measurements: list[Measurement], workload: Workload, workers: int) -> str:
    """The spec's layout: req/s at c1 and c16, added p50 at c1."""
    index = {(m.config, m.concurrency): m for m in measurements if m.workload == workload}
    header = f"| in front of the upstream ({workload}) | req/s c1 | req/s c16 | added p50 at c1 |"
    lines = [header, "|---|---:|---:|---:|"]
    for config in CONFIGS:
        c1, c16 = index.get((config, 1)), index.get((config, 16))
        if c1 is None and c16 is None:
            continue
        rps1 = f"{c1.median('rps'):,.0f}" if c1 else "-"
        rps16 = f"{c16.median('rps'):,.0f}" if c16 else "-"
        added = _fmt(c1.derived.get("added_p50_ms") if c1 else None, ".2f", True)
        added = added if added == "-" else f"{added} ms"
        lines.append(f"| {config_label(config, workers)} | {rps1} | {rps16} | {added} |")
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "aiohttp", "httpx"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "missing"
    for name, cmd in (("nginx", [NGINX, "-v"]), ("wrk", [WRK, "-v"])):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        versions[name] = (done.stdout + done.stderr).strip().splitlines()[0]
    return versions


def write_json(opts: Options, outcome: Outcome, started: float) -> None:
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": {
            "started_unix": round(started), "wall_s": round(time.time() - started, 1),
            "host": platform.node(), "cpus": _cpu_count(), "versions": _versions(),
            "options": {**vars(opts), "output": str(opts.output)},
            "pinning": {"upstream": "core 0", "proxy": "core 1" if opts.gateway_workers == 1
                        else "core 1 (gateway: cores 0-1)", "wrk": "unpinned"},
        },
        "configs": {c: config_label(c, opts.gateway_workers) for c in opts.configs},
        "skipped": outcome.skipped,
        "failures": outcome.failures,
        "gateway_request_log": outcome.gateway_log,
        "results": [m.as_dict() for m in outcome.measurements],
    }
    opts.output.write_text(json.dumps(doc, indent=2) + "\n")


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=int, default=5, help="seconds per measurement (5)")
    p.add_argument("--repeats", type=int, default=1, help="runs per figure; medians (1)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up seconds, 0 for none (1)")
    p.add_argument("--concurrency", default="1,16,64", help="comma list (1,16,64)")
    p.add_argument("--workload", default="json,sse", help="comma list of json,sse")
    p.add_argument("--only", default=",".join(CONFIGS),
                   help=f"comma list of configs to measure: {','.join(CONFIGS)}")
    p.add_argument("--gateway-workers", type=int, default=1,
                   help="gateway uvicorn workers; >1 pins the gateway to both cores")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--max-foreign-cpu", type=float, default=0.15,
                   help="rerun a measurement when other processes took more than this share "
                        "of the CPUs (0.15)")
    p.add_argument("--noise-retries", type=int, default=2,
                   help="reruns allowed per measurement for --max-foreign-cpu (2)")
    args = p.parse_args(argv)
    configs = _choices(args.only, list(CONFIGS), "--only", p)
    workloads = cast(list[Workload], _choices(args.workload, list(WORKLOADS), "--workload", p))
    concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.repeats < 1 or args.duration < 1 or args.gateway_workers < 1 or min(concurrency) < 1:
        p.error("--repeats, --duration, --gateway-workers and --concurrency must be >= 1")
    return Options(args.duration, args.repeats, args.warmup, concurrency, workloads, configs,
                   args.gateway_workers, args.output, args.max_foreign_cpu, args.noise_retries)


def _choices(value: str, allowed: list[str], flag: str, p: argparse.ArgumentParser) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        p.error(f"{flag}: unknown {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return [a for a in allowed if a in chosen]


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt (even if inherited as ignored) and SIGTERM/SIGHUP raise
    SystemExit, so that the ``finally`` clean-up of every started process always runs."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        log(f"signal {signal.Signals(signum).name}: stopping")
        raise SystemExit(128 + signum)

    handlers: dict[signal.Signals, Callable[[int, FrameType | None], Any]] = {
        signal.SIGINT: signal.default_int_handler, signal.SIGTERM: handler,
        signal.SIGHUP: handler,
    }
    previous = {sig: signal.signal(sig, new) for sig, new in handlers.items()}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def estimate_s(opts: Options) -> float:
    per_point = opts.warmup_s + opts.duration_s * opts.repeats
    points = len(opts.configs) * len(opts.workloads) * len(opts.concurrency)
    return points * per_point + 3 * len(opts.configs) * len(opts.workloads)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.time()
    log(f"proxy overhead bench: {', '.join(opts.configs)} x {', '.join(opts.workloads)} x "
        f"c{opts.concurrency}; about {estimate_s(opts) / 60:.1f} min")
    if "upstream" not in opts.configs:
        log("note: 'upstream' not measured, so no added-latency figures")
    with terminate_as_exit(), tempfile.TemporaryDirectory(prefix="proxy-overhead-") as tmp, \
            Processes(Path(tmp)) as procs:
        outcome = Bench(opts, procs, Path(tmp)).run()
    add_derived(outcome.measurements)
    write_json(opts, outcome, started)
    print()
    for workload in opts.workloads:
        print(detail_table(outcome.measurements, workload, opts.gateway_workers), end="\n\n")
    for workload in opts.workloads:
        print(summary_table(outcome.measurements, workload, opts.gateway_workers), end="\n\n")
    for config, reason in outcome.skipped.items():
        print(f"SKIPPED {config}: {reason}")
    for failure in outcome.failures:
        print(f"FAILED {failure}")
    print(f"results: {opts.output}  ({time.time() - started:.0f} s)")
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    run_cli(main)
