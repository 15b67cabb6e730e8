"""One wrk measurement for ``proxy_overhead.py``: run wrk with ``wrk/post_chat.lua`` and parse it.

The Lua script's ``done()`` prints ``WRK_RESULT {json}`` (percentiles from wrk's own latency
histogram, in microseconds), which is sturdier than scraping the ``--latency`` text.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.proxy.overhead_servers import BENCH_DIR, BenchError

WRK = shutil.which("wrk") or "/usr/bin/wrk"
LUA_SCRIPT = BENCH_DIR / "wrk" / "post_chat.lua"
MARKER = "WRK_RESULT "


@dataclass(frozen=True)
class WrkRun:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def threads_for(concurrency: int) -> int:
    return 1 if concurrency == 1 else 2


def _parse(stdout: str) -> WrkRun:
    line = next((ln for ln in stdout.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise BenchError(f"wrk printed no {MARKER.strip()} line:\n{stdout[-2000:]}")
    data = json.loads(line[len(MARKER):])
    errors = data["errors"]
    latency = data["latency_us"]
    seconds = data["duration_us"] / 1e6
    return WrkRun(
        rps=data["requests"] / seconds if seconds else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        requests=data["requests"],
        # wrk counts every status > 399 here; the preflight check pins the status to 200.
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
    )


def run_wrk(
    url: str, concurrency: int, duration_s: int, body_file: Path, api_key: str
) -> WrkRun:
    """Closed-loop load: ``concurrency`` connections, 1 thread at c1, 2 otherwise."""
    cmd = [
        WRK, f"-t{threads_for(concurrency)}", f"-c{concurrency}", f"-d{duration_s}s",
        "--timeout", "10s", "-s", str(LUA_SCRIPT), f"{url}/v1/chat/completions",
    ]
    env = {**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_API_KEY": api_key}
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=duration_s + 60, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return _parse(done.stdout)
