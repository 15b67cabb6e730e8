"""Our gateway as configuration (e) of ``proxy_overhead.py``: set up by its CLI, then served.

Local mode, SQLite in a temp dir, auth + request logging + metrics as they are by default. The
bench account's tier has limits far above what a 2-core box can send, so rate limiting is
evaluated on every request but never rejects one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.proxy.overhead_payloads import Workload
from bench.proxy.overhead_servers import (
    BOTH_CORES,
    PROXY_CORE,
    BenchError,
    Managed,
    Processes,
    free_port,
    http_request,
    wait_until_up,
)

REQUIRED_COMMANDS = ("serve", "migrate", "accounts", "keys")
BENCH_TIER = "bench"
_HUGE = 10**12


def gateway_executable() -> str:
    local = Path(sys.executable).parent / "gateway"
    return str(local) if local.exists() else (shutil.which("gateway") or "gateway")


def unavailable_reason() -> str | None:
    """Why (e) cannot run yet, or None when the gateway CLI has every command it needs."""
    try:
        done = subprocess.run(
            [gateway_executable(), "--help"], capture_output=True, text=True, timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`gateway --help` failed: {exc}"
    output = done.stdout + done.stderr
    if done.returncode != 0:
        return f"`gateway --help` exited {done.returncode}: {output.strip().splitlines()[-1:]}"
    missing = [cmd for cmd in REQUIRED_COMMANDS if cmd not in output]
    return f"`gateway --help` lists no {', '.join(missing)}" if missing else None


def _tiers_json() -> str:
    limits = {
        "requests_per_minute": _HUGE, "tokens_per_minute": _HUGE,
        "tokens_per_day": _HUGE, "max_concurrent": 100_000,
    }
    throttled = {
        "requests_per_minute": 5, "tokens_per_minute": 5_000,
        "tokens_per_day": 50_000, "max_concurrent": 1,
    }
    return json.dumps({BENCH_TIER: limits, "standard": limits, "throttled": throttled})


@dataclass(frozen=True)
class GatewaySetup:
    env: dict[str, str]
    api_key: str
    workers: int
    work_dir: Path


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [gateway_executable(), *args], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"`gateway {' '.join(args)}` exited {done.returncode}:\n"
                         f"{done.stdout}\n{done.stderr}")
    return done.stdout


def _last_json(output: str) -> dict[str, object]:
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            parsed: dict[str, object] = json.loads(line)
            return parsed
    try:
        parsed = json.loads(output)
    except ValueError as exc:
        raise BenchError(f"no JSON object in gateway CLI output: {output!r}") from exc
    return parsed


def prepare(work_dir: Path, upstream_url: str, workers: int) -> GatewaySetup:
    """Create the schema, an account and a key in a throwaway SQLite database."""
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GATEWAY_MODE": "local",
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_UPSTREAM_URL": f"{upstream_url}/v1",
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{work_dir / 'bench.db'}",
        "GATEWAY_REQUEST_LOG_SPILL_DIR": str(work_dir / "spill"),
        "GATEWAY_TIERS": _tiers_json(),
        "GATEWAY_DEFAULT_TIER": BENCH_TIER,
    }
    _cli(env, "migrate")
    account = _last_json(_cli(env, "accounts", "create", "--name", "bench", "--tier", BENCH_TIER))
    key = _last_json(_cli(env, "keys", "create", str(account["id"])))
    return GatewaySetup(env=env, api_key=str(key["key"]), workers=workers, work_dir=work_dir)


def start(
    procs: Processes, setup: GatewaySetup, upstream_url: str, workload: Workload
) -> tuple[Managed, str]:
    """``gateway serve`` pinned to core 1 (or to both cores with several workers)."""
    port = free_port()
    cores = PROXY_CORE if setup.workers == 1 else BOTH_CORES
    env = {**setup.env, "GATEWAY_UPSTREAM_URL": f"{upstream_url}/v1"}
    cmd = ["taskset", "-c", cores, gateway_executable(), "serve", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(setup.workers)]
    managed = procs.start(f"gateway-{workload}", cmd, env)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(managed, f"{url}/healthz", timeout_s=60.0)
    return managed, url


def requests_2xx(url: str) -> int | None:
    """``gateway_requests_total`` summed over 2xx, from the gateway's /metrics."""
    try:
        status, _, body = http_request(f"{url}/metrics", timeout_s=10.0)
    except OSError:
        return None
    if status != 200:
        return None
    total = 0.0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("gateway_requests_total{") and 'status_class="2xx"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def logged_records(setup: GatewaySetup) -> tuple[int, int]:
    """(request records in the database, records waiting in spill files) so far."""
    with contextlib.closing(sqlite3.connect(setup.work_dir / "bench.db")) as db:
        rows = int(db.execute("SELECT count(*) FROM request_records").fetchone()[0])
    spilled = 0
    for path in (setup.work_dir / "spill").glob("spill-*.jsonl"):
        with path.open("rb") as spill:
            spilled += sum(1 for _ in spill)
    return rows, spilled
